//! The config a running pilot serves to `meshctl analyze` and `meshctl describe`
//! (`/debug/configz`): its resources with where each was read from, and its inventory.

use serde::{Deserialize, Serialize};

use super::inventory::Inventory;
use crate::resource::{Resource, Source};

/// A resource with its source (file, lines); the resource's own serialization leaves it out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourcedResource {
    pub source: Source,
    pub object: Resource,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigDump {
    pub resources: Vec<SourcedResource>,
    pub inventory: Inventory,
}

impl ConfigDump {
    pub fn new<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
        inventory: Inventory,
    ) -> Self {
        Self {
            resources: resources
                .into_iter()
                .map(|r| SourcedResource {
                    source: r.source().clone(),
                    object: r.clone(),
                })
                .collect(),
            inventory,
        }
    }

    /// The resources with their sources restored, and the inventory.
    pub fn into_parts(self) -> (Vec<Resource>, Inventory) {
        let resources = self
            .resources
            .into_iter()
            .map(|s| {
                let mut r = s.object;
                r.set_source(s.source);
                r
            })
            .collect();
        (resources, self.inventory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_keep_their_lines_through_json() {
        let (resources, errors) = crate::load_str(
            "vs.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v9}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let dump = ConfigDump::new(&resources, Inventory::default());
        let json = serde_json::to_string(&dump).unwrap();
        let (back, _) = serde_json::from_str::<ConfigDump>(&json)
            .unwrap()
            .into_parts();
        assert_eq!(back, resources);
        assert_eq!(back[0].source(), resources[0].source());
        let found = super::super::analyze(&back, &Inventory::default());
        assert_eq!(
            found[0].to_string(),
            "Error [IST0101] (VirtualService default/reviews vs.yaml:8) Referenced host+subset in destinationrule not found: \"reviews+v9\""
        );
    }
}
