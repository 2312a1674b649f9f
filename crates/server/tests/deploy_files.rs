//! The configurations shipped under deploy/ are configurations fjord accepts, and the numbers
//! other files repeat from them agree: ports of probes, health checks and scrape targets,
//! and the kernel buffer limits the sysctl drop-in and the package raise. (Each file's own
//! format is checked by its tool in .ci/run: systemd-analyze, hadolint, kubernetes-validate,
//! promtool.)

use fjord_server::Config;

mod support;
use support::repo_file;

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The block scalar `key: |` of a YAML file, de-indented (enough YAML for one ConfigMap).
fn yaml_block(text: &str, key: &str) -> String {
    let mut lines = text.lines();
    assert!(
        lines.by_ref().any(|l| l.trim() == format!("{key}: |")),
        "no `{key}: |` block"
    );
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.starts_with("    "))
        .collect();
    assert!(!body.is_empty(), "`{key}` block is empty");
    body.iter()
        .map(|l| l.get(4..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn container_configuration_is_valid_and_its_port_is_the_health_checks() {
    let config = Config::from_file(&repo_file("deploy/container/fjord.toml")).expect("valid");
    let port = config.metrics.listen.port();
    assert!(config.metrics.enabled);
    assert!(
        config.metrics.listen.ip().is_unspecified(),
        "reachable from outside the container"
    );
    let dockerfile = read("deploy/container/Dockerfile");
    assert!(
        dockerfile.contains(&format!("\"http://127.0.0.1:{port}/health\"")),
        "HEALTHCHECK probes another port than {port}"
    );
    assert!(dockerfile.contains(&format!("EXPOSE 6969/udp {port}/tcp")));
}

#[test]
fn kubernetes_configuration_is_valid_and_matches_probes_and_scrape_annotations() {
    let manifest = read("deploy/kubernetes/fjord.yaml");
    let toml = yaml_block(&manifest, "fjord.toml");
    let config = Config::from_toml_str(&toml).expect("the ConfigMap's fjord.toml is valid");
    let port = config.metrics.listen.port();
    assert!(config.metrics.listen.ip().is_unspecified());
    assert!(manifest.contains(&format!("prometheus.io/port: \"{port}\"")));
    assert!(manifest.contains(&format!("containerPort: {port}")));
    for a in &config.network.listen {
        assert!(manifest.contains(&format!("containerPort: {}", a.port())));
    }
    assert!(
        config.connection_id.key.is_empty(),
        "the key belongs in the Secret, not the ConfigMap"
    );
    assert!(manifest.contains("name: FJORD_CONNECTION_ID_KEY"));
}

#[test]
fn example_scrape_target_is_the_default_metrics_address() {
    let prometheus = read("deploy/prometheus/prometheus.yml");
    let default = Config::default().metrics.listen;
    assert!(prometheus.contains(&format!("\"{default}\"")), "{default}");
}

#[test]
fn sysctl_drop_in_and_package_raise_the_limits_to_the_default_buffers() {
    let net = Config::default().network;
    let sysctl = read("deploy/sysctl/60-fjord.conf");
    assert!(sysctl.contains(&format!("net.core.rmem_max = {}", net.socket_recv_buffer)));
    assert!(sysctl.contains(&format!("net.core.wmem_max = {}", net.socket_send_buffer)));
    assert_eq!(net.socket_recv_buffer, net.socket_send_buffer);
    let postinst = read("deploy/debian/postinst");
    assert!(postinst.contains(&format!("want={}", net.socket_recv_buffer)));
}
