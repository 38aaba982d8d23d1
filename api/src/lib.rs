//! mesh-api
