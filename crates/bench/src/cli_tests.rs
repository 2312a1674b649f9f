//! Unit tests of `cli.rs`.

use super::*;
use clap::CommandFactory;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("fjord-bench").chain(args.iter().copied()))
}

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn every_option_has_help() {
    for arg in Cli::command().get_arguments() {
        assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
    }
}

#[test]
fn defaults_resolve() {
    let c = parse(&["127.0.0.1:6969"]).unwrap().to_config().unwrap();
    assert_eq!(c.target, "127.0.0.1:6969".parse().unwrap());
    assert_eq!(c.duration, Some(Duration::from_secs(10)));
    assert_eq!(c.mode, LoadMode::Closed);
    assert_eq!(c.population.distribution, SwarmDistribution::Zipf(1.0));
    assert_eq!(
        c.mix,
        Mix {
            connect: 1,
            announce: 20,
            scrape: 2
        }
    );
    assert_eq!(c.population.peers, 100_000);
    assert!(c.use_mmsg && c.progress);
}

#[test]
fn aquatic_profile_and_overrides() {
    let c = parse(&[
        "[::1]:3000",
        "--profile",
        "aquatic",
        "--num-want",
        "-1",
        "--peers",
        "10",
    ])
    .unwrap()
    .to_config()
    .unwrap();
    assert!(c.target.is_ipv6());
    assert_eq!(c.population.distribution, SwarmDistribution::Aquatic);
    assert_eq!(c.population.events, EventModel::Aquatic);
    assert_eq!(
        c.mix,
        Mix {
            connect: 50,
            announce: 50,
            scrape: 1
        }
    );
    assert_eq!(c.population.swarms, 1_000_000);
    assert_eq!(c.population.peers, 10, "explicit option beats the preset");
    assert_eq!(c.population.num_want, -1);
    assert_eq!(c.population.seeder_ratio, 0.75);
    assert_eq!(c.population.scrape_max, 10);
}

#[test]
fn limits_and_modes() {
    let c = parse(&["127.0.0.1:1", "-n", "2000"])
        .unwrap()
        .to_config()
        .unwrap();
    assert_eq!((c.requests, c.duration), (Some(2000), None));
    let c = parse(&[
        "127.0.0.1:1",
        "--mode",
        "open",
        "--rate",
        "5000",
        "-d",
        "2.5",
        "-q",
        "--json",
    ])
    .unwrap();
    assert!(c.json && c.quiet);
    let c = c.to_config().unwrap();
    assert_eq!(c.mode, LoadMode::Open { rate: 5000.0 });
    assert_eq!(c.duration, Some(Duration::from_millis(2500)));
    assert!(!c.progress);
    assert!(
        parse(&["127.0.0.1:1", "--mode", "open"])
            .unwrap()
            .to_config()
            .is_err()
    );
    assert!(
        parse(&["127.0.0.1:1", "--rate", "5"])
            .unwrap()
            .to_config()
            .is_err()
    );
}

#[test]
fn warm_up_defaults_and_targets_as_users_write_them() {
    let c = parse(&["udp://127.0.0.1:6969/announce?k=1"])
        .unwrap()
        .to_config()
        .unwrap();
    assert_eq!(c.warmup, Duration::from_secs(2), "2 s of a 10 s run");
    assert_eq!(c.target, "127.0.0.1:6969".parse().unwrap());
    assert_eq!(c.target_url, "udp://127.0.0.1:6969/announce?k=1");
    assert_eq!(c.path.as_deref(), Some("/announce?k=1"));
    assert_eq!(&c.announce_options[..2], &[0x02, 13]);
    let c = parse(&["127.0.0.1:1", "-d", "3"])
        .unwrap()
        .to_config()
        .unwrap();
    assert_eq!(
        c.warmup,
        Duration::from_millis(600),
        "a fifth of a short run"
    );
    let c = parse(&["127.0.0.1:1", "-n", "10"])
        .unwrap()
        .to_config()
        .unwrap();
    assert_eq!(c.warmup, Duration::ZERO, "no warm-up for a request count");
    let c = parse(&["127.0.0.1:1", "--warmup", "0"])
        .unwrap()
        .to_config()
        .unwrap();
    assert_eq!(c.warmup, Duration::ZERO);
    let c = parse(&["udp://[::1]:6969", "--bind", "::1,::1", "--bind", "::1"])
        .unwrap()
        .to_config()
        .unwrap();
    assert_eq!(c.bind.len(), 3);
    assert!(c.target.is_ipv6());
    let c = parse(&["localhost:6969", "-4"])
        .unwrap()
        .to_config()
        .unwrap();
    assert!(c.target.is_ipv4());
    assert!(parse(&["localhost:1", "-4", "-6"]).is_err());
}

#[test]
fn capacity_mode_resolves_to_a_search_with_default_limits() {
    let inv = parse(&["127.0.0.1:1", "--mode", "capacity"])
        .unwrap()
        .to_invocation()
        .unwrap();
    let Plan::Capacity { base, search } = inv.plan else {
        panic!("not a search")
    };
    assert_eq!(base.duration, Some(Duration::from_secs(5)));
    assert_eq!(base.warmup, Duration::from_secs(1));
    assert_eq!(search.limits, CAPACITY_DEFAULT_LIMITS);
    assert_eq!((search.start_rate, search.ramp_factor), (10_000.0, 2.0));
    assert_eq!(inv.thresholds, CAPACITY_DEFAULT_LIMITS);
    let inv = parse(&[
        "127.0.0.1:1",
        "--mode",
        "capacity",
        "--max-p99",
        "2ms",
        "--max-loss",
        "0.1%",
        "--min-rate",
        "5000",
        "-d",
        "3",
    ])
    .unwrap()
    .to_invocation()
    .unwrap();
    let Plan::Capacity { base, search } = inv.plan else {
        panic!("not a search")
    };
    assert_eq!(search.limits.max_p99_us, Some(2_000));
    assert_eq!(search.limits.max_loss, Some(0.001));
    assert_eq!(inv.thresholds.min_rate, Some(5000.0));
    assert_eq!(base.warmup, Duration::from_millis(600));
    let bad = |args: &[&str]| parse(args).unwrap().to_invocation().is_err();
    assert!(bad(&["127.0.0.1:1", "--mode", "capacity", "-n", "10"]));
    assert!(bad(&["127.0.0.1:1", "--mode", "capacity", "--rate", "10"]));
    assert!(bad(&[
        "127.0.0.1:1",
        "--mode",
        "capacity",
        "--ramp-factor",
        "1"
    ]));
    assert!(bad(&["127.0.0.1:1", "--curve-csv", "c.csv"]));
    assert!(bad(&["127.0.0.1:1", "--plot", "p.gif"]));
    // A single run checks only the limits given.
    let inv = parse(&["127.0.0.1:1", "--max-p99", "5ms"])
        .unwrap()
        .to_invocation()
        .unwrap();
    assert_eq!(inv.thresholds.max_p99_us, Some(5_000));
    assert_eq!(inv.thresholds.max_loss, None);
    assert!(parse(&["127.0.0.1:1", "--max-loss", "2"]).is_err());
    assert!(parse(&["127.0.0.1:1", "--max-p99", "soon"]).is_err());
}

#[test]
fn bad_values_are_refused() {
    assert!(parse(&[]).is_err(), "target is required");
    assert!(parse(&["127.0.0.1:1", "--sources", "0"]).is_err());
    assert!(parse(&["127.0.0.1:1", "--mode", "sideways"]).is_err());
    let bad = |args: &[&str]| parse(args).unwrap().to_config().is_err();
    assert!(bad(&["127.0.0.1:1", "--seeder-ratio", "1.5"]));
    assert!(bad(&["127.0.0.1:1", "--scrape-max", "75"]));
    assert!(bad(&[
        "127.0.0.1:1",
        "--scrape-min",
        "5",
        "--scrape-max",
        "4"
    ]));
    assert!(bad(&["127.0.0.1:1", "--reconnect-after", "120"]));
    assert!(bad(&[
        "127.0.0.1:1",
        "--weight-connect",
        "0",
        "--weight-announce",
        "0",
        "--weight-scrape",
        "0"
    ]));
    assert!(bad(&["127.0.0.1:1", "--bind", "::1"]));
    assert!(bad(&["127.0.0.1:1", "--batch", "65"]));
    assert!(bad(&["127.0.0.1:1", "-d", "0"]));
    assert!(bad(&["127.0.0.1:1", "-d", "2", "--warmup", "2"]));
    assert!(bad(&["127.0.0.1:1", "--bind", "127.0.0.1,::1"]));
    assert!(bad(&["http://127.0.0.1:1"]));
}
