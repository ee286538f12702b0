//! Prints the Broadcast CRD as YAML; `make crds` writes it to crds/broadcast.yaml.
fn main() {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!(
            "crdgen: print the Broadcast CustomResourceDefinition (castyard.dev/v1alpha1) as YAML\n\nUsage: crdgen > crds/broadcast.yaml"
        );
        return;
    }
    print!("{}", castyard_crd::crd_yaml());
}
