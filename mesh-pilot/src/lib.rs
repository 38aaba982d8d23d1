//! mesh-pilot
