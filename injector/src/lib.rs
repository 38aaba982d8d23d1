//! mesh-injector
