//! Where `analyze` and `describe` read the mesh from: files (`-f`), or a running pilot.

use std::path::PathBuf;

use mesh_api::analysis::Inventory;
use mesh_api::{Resource, ValidationError};

use crate::pilot;

#[derive(clap::Args, Debug)]
pub struct ConfigSource {
    /// Files or directories of YAML (repeatable); without them, the running pilot's config.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Pilot's debug address, read when no file is given.
    #[arg(long, env = "MESH_PILOT", default_value = pilot::DEFAULT_PILOT)]
    pub pilot: String,
}

/// The mesh to look at.
pub struct Loaded {
    pub resources: Vec<Resource>,
    pub inventory: Inventory,
    /// Objects of the files that failed to load or validate (they are not in `resources`).
    pub errors: Vec<ValidationError>,
    /// What was read, for messages: the paths, or pilot's address.
    pub origin: String,
}

pub fn load(source: &ConfigSource) -> Result<Loaded, String> {
    if source.files.is_empty() {
        let dump = pilot::configz(&source.pilot).map_err(|e| e.to_string())?;
        let (resources, inventory) = dump.into_parts();
        return Ok(Loaded {
            resources,
            inventory,
            errors: Vec::new(),
            origin: format!("pilot {}", source.pilot),
        });
    }
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for path in &source.files {
        let (r, e) = mesh_api::load_path(path);
        resources.extend(r);
        errors.extend(e);
    }
    let inventory = Inventory::from_resources(&resources);
    let origin = source
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Loaded {
        resources,
        inventory,
        errors,
        origin,
    })
}
