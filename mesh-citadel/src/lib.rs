//! mesh-citadel
