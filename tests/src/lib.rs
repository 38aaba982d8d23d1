//! End-to-end tests of the mesh: they run the real binaries as processes.
