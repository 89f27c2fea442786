//! anymesh's own certificate authority (`anymesh ca`): join tokens, CSR
//! signing over HTTPS, renewal over mutual TLS, and its client.
