//! The WorkOS Audit Logs API client.
