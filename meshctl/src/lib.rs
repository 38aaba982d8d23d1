//! meshctl
