//! Tests of the configuration: template = defaults, errors name their key.

use super::*;

#[test]
fn template_parses_to_exactly_the_defaults() {
    assert_eq!(
        Config::from_toml_str(DEFAULT_CONFIG_TOML).unwrap(),
        Config::default()
    );
}

#[test]
fn template_names_every_key() {
    // Keys present in the serialized defaults must all appear (uncommented) in the template,
    // except `access_list.path` and `stats.catalogue`, which are None by default and appear
    // commented out.
    let template: toml::Table = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
    let defaults: toml::Table = toml::Table::try_from(Config::default()).unwrap();
    fn keys(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in t {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(sub) => keys(sub, &name, out),
                _ => out.push(name),
            }
        }
    }
    let (mut a, mut b) = (vec![], vec![]);
    keys(&template, "", &mut a);
    keys(&defaults, "", &mut b);
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(DEFAULT_CONFIG_TOML.contains("# path = "));
    assert!(DEFAULT_CONFIG_TOML.contains("# catalogue = "));
    assert!(DEFAULT_CONFIG_TOML.contains("# dir = "));
}

#[test]
fn state_and_previous_key_errors_name_their_key() {
    let key_of = |toml: &str| match Config::from_toml_str(toml) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("{toml}: {other:?}"),
    };
    assert_eq!(key_of("[state]\ndir = \"\""), "state.dir");
    assert_eq!(
        key_of("[state]\nsnapshot_interval_secs = 86401"),
        "state.snapshot_interval_secs"
    );
    assert_eq!(
        key_of("[connection_id]\nprevious_key = \"xyz\""),
        "connection_id.previous_key"
    );
    let k = "00112233445566778899aabbccddeeff";
    assert_eq!(
        key_of(&format!(
            "[connection_id]\nkey = \"{k}\"\nprevious_key = \"{}\"",
            k.to_uppercase()
        )),
        "connection_id.previous_key"
    );
    let ok = Config::from_toml_str(&format!(
        "[connection_id]\nprevious_key = \"{k}\"\n[state]\ndir = \"/var/lib/fjord\"\n\
         snapshot_interval_secs = 0"
    ))
    .unwrap();
    assert_eq!(ok.connection_id_previous_key(), Some(parse_key(k).unwrap()));
    assert_eq!(
        ok.state.dir.as_deref(),
        Some(std::path::Path::new("/var/lib/fjord"))
    );
}

/// Regression (issue 11): one set of store defaults, and the template states the memory
/// they allow.
#[test]
fn store_defaults_are_the_stores_and_the_template_says_their_memory() {
    let store = crate::fjord_store::StoreConfig::default();
    let section = StoreSection::default();
    assert_eq!(
        (
            section.max_peers,
            section.max_swarms,
            section.peer_timeout_secs,
            section.clean_cycle_secs
        ),
        (
            store.max_peers,
            store.max_swarms,
            store.peer_timeout_secs,
            store.clean_cycle_secs
        )
    );
    assert_eq!(Config::default().store_config(), store);
    let text = section.memory_allowed_text();
    assert!(
        DEFAULT_CONFIG_TOML.contains(&text),
        "template must say: {text}"
    );
}

#[test]
fn byte_counts_read_in_decimal_units() {
    assert_eq!(approx_bytes(750_000_000), "750 MB");
    assert_eq!(approx_bytes(1_750_000_000), "1.75 GB");
    assert_eq!(approx_bytes(60_000_000), "60 MB");
    assert_eq!(approx_bytes(12_345_678_901), "12.3 GB");
    assert_eq!(approx_bytes(999), "999 bytes");
    assert_eq!(approx_bytes(2_000), "2 kB");
}

#[test]
fn empty_file_is_defaults() {
    assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let e = Config::from_toml_str("wrokers = 3")
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrokers"), "{e}");
    let e = Config::from_toml_str("[protocol]\nmax_num_wnat_v4 = 3")
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_num_wnat_v4"), "{e}");
    let e = Config::from_toml_str("[nope]\n").unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn invalid_values_name_the_key() {
    for (toml, key) in [
        (
            "[protocol]\nmax_num_want_v4 = 201",
            "protocol.max_num_want_v4",
        ),
        (
            "[protocol]\nmax_num_want_v6 = 67",
            "protocol.max_num_want_v6",
        ),
        (
            "[protocol]\nmax_scrape_hashes = 75",
            "protocol.max_scrape_hashes",
        ),
        (
            "[protocol]\ndefault_num_want = -1",
            "protocol.default_num_want",
        ),
        ("[connection_id]\nkey = \"abc\"", "connection_id.key"),
        (
            "[connection_id]\nkey = \"zz112233445566778899aabbccddeeff\"",
            "connection_id.key",
        ),
        ("[network]\nlisten = []", "network.listen"),
        ("[network]\nbatch_size = 0", "network.batch_size"),
        ("log_level = \"loud\"", "log_level"),
        ("[access_list]\nmode = \"allow\"", "access_list.path"),
        ("[access_list]\npath = \"/x\"", "access_list.mode"),
        ("[store]\nmax_peers = 0", "store.max_peers"),
        (
            "[store]\npeer_timeout_secs = 40000",
            "store.peer_timeout_secs",
        ),
        (
            "[store]\nclean_interval_ms = 300001",
            "store.clean_interval_ms",
        ),
        ("[store]\nclean_cycle_secs = 0", "store.clean_cycle_secs"),
        ("[stats]\ntop_swarms = 51", "stats.top_swarms"),
        (
            "[stats]\nmax_torrent_series = 100001",
            "stats.max_torrent_series",
        ),
        // Issue 15: the limiter, admission, the adaptive interval, back-off replies and
        // access-list reloads.
        ("[limits]\nprefix_v4 = 0", "limits.prefix_v4"),
        ("[limits]\nprefix_v6 = 129", "limits.prefix_v6"),
        ("[limits]\nrequests_per_sec = 0", "limits.requests_per_sec"),
        (
            "[limits]\nrequests_per_sec = 100\nburst = 99",
            "limits.burst",
        ),
        ("[limits]\nbuckets = 1000", "limits.buckets"),
        ("[limits]\nbuckets = 32", "limits.buckets"),
        ("[admission]\nprefix_v4 = 33", "admission.prefix_v4"),
        ("[admission]\nprefix_v6 = 0", "admission.prefix_v6"),
        (
            "[admission]\nmax_prefix_share = 0.0",
            "admission.max_prefix_share",
        ),
        (
            "[admission]\nmax_prefix_share = 1.5",
            "admission.max_prefix_share",
        ),
        (
            "[admission]\nmax_prefix_share = 0.01\npressure_prefix_share = 0.02",
            "admission.pressure_prefix_share",
        ),
        (
            "[admission]\npressure_fill = 0.0",
            "admission.pressure_fill",
        ),
        (
            "[admission]\nmax_peers_per_swarm = 0",
            "admission.max_peers_per_swarm",
        ),
        ("[admission]\nsketch_cells = 1000", "admission.sketch_cells"),
        (
            "[admission]\nswarm_sketch_cells = 512",
            "admission.swarm_sketch_cells",
        ),
        (
            "[adaptive_interval]\nload_fraction = 0.0",
            "adaptive_interval.load_fraction",
        ),
        (
            "[adaptive_interval]\nmax_interval_secs = 600",
            "adaptive_interval.max_interval_secs",
        ),
        (
            "[adaptive_interval]\nstep_secs = 0",
            "adaptive_interval.step_secs",
        ),
        (
            "[adaptive_interval]\nwindow_secs = 0",
            "adaptive_interval.window_secs",
        ),
        (
            "[protocol]\nbackoff_interval_secs = 0",
            "protocol.backoff_interval_secs",
        ),
        (
            "[access_list]\nmax_shrink_fraction = 1.5",
            "access_list.max_shrink_fraction",
        ),
        // Issue 10: at the largest timeout the stamps leave a cycle of ~4.5 h, not 5.
        (
            "[store]\npeer_timeout_secs = 32767\nclean_cycle_secs = 18000",
            "store.clean_cycle_secs",
        ),
    ] {
        let e = Config::from_toml_str(toml).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { key: k, .. } if *k == key),
            "{toml}: {e}"
        );
        assert!(e.to_string().contains(key));
    }
    // Wrong types are parse errors naming the key.
    // The largest timeout with the largest cycle it allows is accepted.
    Config::from_toml_str("[store]\npeer_timeout_secs = 32767\nclean_cycle_secs = 16315").unwrap();
    let e = Config::from_toml_str("workers = \"four\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("workers"), "{e}");
    let e = Config::from_toml_str("[network]\nlisten = [\"nowhere\"]")
        .unwrap_err()
        .to_string();
    assert!(e.contains("listen"), "{e}");
    let e = Config::from_toml_str("log_format = \"xml\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("log_format"), "{e}");
    let e = Config::from_toml_str("[access_list]\nmode = \"maybe\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("mode"), "{e}");
}

#[test]
fn key_parses() {
    let c = Config::from_toml_str("[connection_id]\nkey = \"00112233445566778899AABBCCDDEEFF\"")
        .unwrap();
    assert_eq!(
        c.connection_id_key().unwrap(),
        [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff
        ]
    );
    assert_eq!(Config::default().connection_id_key(), None);
}
