//! The krew manifest of `kubectl stage` (`deploy/krew/stage.yaml`): krew links each platform's `bin`
//! as `kubectl-<metadata.name>`, and the binary answers as the plugin only under that name.

use super::*;
use stage_guard::cli::steer::PLUGIN_FILE;

#[test]
fn krew_links_the_binary_under_the_name_it_answers_to_as_a_plugin() {
    let docs = read_yaml_file(&deploy_dir().join("krew/stage.yaml"));
    assert_eq!(docs.len(), 1);
    let plugin = &docs[0];
    assert_eq!(
        plugin["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(plugin["kind"], "Plugin");
    let name = str_at(plugin, "/metadata/name");
    assert_eq!(format!("kubectl-{name}"), PLUGIN_FILE);
    // krew refuses a version that is not v-prefixed semver.
    let version = str_at(plugin, "/spec/version");
    assert!(version.starts_with('v') && version[1..].split('.').count() == 3);
    assert_eq!(
        version[1..],
        *env!("CARGO_PKG_VERSION"),
        "the manifest's version follows Cargo.toml's"
    );

    let platforms = plugin["spec"]["platforms"].as_array().unwrap();
    assert!(!platforms.is_empty());
    for p in platforms {
        let bin = str_at(p, "/bin");
        assert_eq!(bin, "stage-guard", "{}", short(p));
        // The binary krew links must be among the files it unpacks.
        let files = p["files"].as_array().unwrap();
        assert!(files.iter().any(|f| f["from"] == bin), "{}", short(p));
        assert_eq!(str_at(p, "/sha256").len(), 64, "{}", short(p));
        assert!(str_at(p, "/uri").contains(version), "{}", short(p));
    }
}
