//! Client-IP rules: which address of a request is the client.
