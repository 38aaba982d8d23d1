//! Generated protocol types of the mesh.
//!
//! Messages serialize with the proto3 JSON mapping (camelCase fields, enums as names), so the
//! same types load from a YAML or JSON file and print in `/config_dump`.

#![allow(clippy::all, clippy::pedantic)]

pub mod config {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mesh.config.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/mesh.config.v1.serde.rs"));
    }
}

pub mod ca {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mesh.ca.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/mesh.ca.v1.serde.rs"));
    }
}

pub mod discovery {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mesh.discovery.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/mesh.discovery.v1.serde.rs"));
    }
}

pub mod echo {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mesh.echo.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/mesh.echo.v1.serde.rs"));
    }
}
