//! mesh-echo
