//! The committed CRDs are what the types generate.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/aixds/crds");
    let generated = aixds::crds::all();
    let mut committed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    committed.sort();
    let names: Vec<&str> = generated.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(committed, names, "run `aixds crds --out-dir charts/aixds/crds`");
    for (file, crd) in &generated {
        let on_disk = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            on_disk == aixds::crds::to_yaml(crd),
            "{file} drifted from the types: run `aixds crds --out-dir charts/aixds/crds`"
        );
    }
}

#[test]
fn backend_ref_rule_is_in_the_crd() {
    let crds = aixds::crds::all();
    let (_, backend) = crds.iter().find(|(f, _)| f.starts_with("aiservicebackends")).unwrap();
    let yaml = aixds::crds::to_yaml(backend);
    assert!(yaml.contains("x-kubernetes-validations"));
    assert!(yaml.contains("self.kind == 'InferencePool'"));
    let versions: Vec<&str> = backend.spec.versions.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(versions, ["v1beta1", "v1alpha1"]);
}
