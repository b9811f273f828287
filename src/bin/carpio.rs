//! carpio(8): the daemon, with relayd(8)'s flags, and the `replay` tool.
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Kernel-bypass load balancer with OpenBSD-compatible carp, pfsync and relayd.
#[derive(Parser, Debug)]
#[command(name = "carpio", version, about)]
struct Cli {
    /// Do not daemonize; log to stderr (relayd -d).
    #[arg(short = 'd')]
    foreground: bool,
    /// Check the configuration and exit (relayd -n).
    #[arg(short = 'n')]
    check: bool,
    /// Verbose logging; repeat for more (relayd -v).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
    /// Define a macro, overriding one of the same name in the file (relayd -D).
    #[arg(short = 'D', value_name = "macro=value", value_parser = parse_define)]
    define: Vec<(String, String)>,
    /// Configuration file.
    #[arg(short = 'f', value_name = "file", default_value = "/etc/carpio.conf")]
    file: PathBuf,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a pcap or pcapng capture through the pipeline and print what happened to every frame.
    Replay {
        /// Input capture (pcap or pcapng; Ethernet, raw IP or Linux cooked).
        input: PathBuf,
        /// Write the frames the pipeline sends (and passes) to this pcap file.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Read the input this many times in all.
        #[arg(long = "loop", default_value_t = 1)]
        loops: u64,
        /// Run the full pipeline of this configuration (redirects, tables, flow tables).
        #[arg(short = 'f', long = "config")]
        config: Option<PathBuf>,
        /// Define a macro for the configuration.
        #[arg(short = 'D', value_name = "macro=value", value_parser = parse_define)]
        define: Vec<(String, String)>,
        /// Number of workers (default: the configuration's `workers`, else 1).
        #[arg(long)]
        workers: Option<usize>,
        /// Also write frames the pipeline passes to the kernel.
        #[arg(long)]
        include_pass: bool,
        /// Preload the capture and time only the workers; prints ns/frame and Mpps per core.
        #[arg(long)]
        bench: bool,
    },
    /// Write a synthetic client-side capture of DNS, NTP and SMTP flows toward virtual addresses.
    Synth {
        /// Output pcap file.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Number of client flows.
        #[arg(long, default_value_t = 1000)]
        flows: u64,
        /// Virtual address (repeat for several; IPv4 and IPv6).
        #[arg(long = "vip")]
        vips: Vec<std::net::IpAddr>,
        /// Services: any of dns, ntp, smtp, comma-separated.
        #[arg(long, default_value = "dns,ntp,smtp", value_delimiter = ',')]
        services: Vec<String>,
        /// Percent of flows over IPv6 when IPv6 virtual addresses are given.
        #[arg(long, default_value_t = 20)]
        v6_percent: u8,
        /// Seed of the generator (same seed, same capture).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Benchmarks: the traffic engine (`gen`) and the lab suite against carpio and its peers.
    Bench(carpio::bench::BenchArgs),
}

fn parse_define(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "invalid macro definition {s:?}: expected macro=value"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Replay {
            input,
            output,
            loops,
            config,
            define,
            workers,
            include_pass,
            bench,
        }) => {
            let cfg = carpio::replay::ReplayConfig {
                input,
                output,
                loops,
                config,
                defines: define,
                workers,
                include_pass,
                bench,
            };
            match carpio::replay::run(&cfg) {
                Ok(report) => {
                    print!("{}", report.render());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("carpio: replay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Cmd::Synth {
            output,
            flows,
            vips,
            services,
            v6_percent,
            seed,
        }) => {
            let mut cfg = carpio::synth::GenConfig {
                flows,
                v6_percent,
                seed,
                ..Default::default()
            };
            if !vips.is_empty() {
                cfg.vips = vips;
            }
            let mut svcs = Vec::new();
            for s in &services {
                svcs.push(match s.as_str() {
                    "dns" => carpio::synth::Service::Dns,
                    "ntp" => carpio::synth::Service::Ntp,
                    "smtp" => carpio::synth::Service::Smtp,
                    other => {
                        eprintln!("carpio: synth: unknown service {other:?} (dns, ntp, smtp)");
                        return ExitCode::FAILURE;
                    }
                });
            }
            cfg.services = svcs;
            match carpio::synth::generate(&cfg, &output) {
                Ok(n) => {
                    println!("wrote {n} frames of {flows} flows to {}", output.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("carpio: synth: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Cmd::Bench(args)) => ExitCode::from(carpio::bench::main(args)),
        None => {
            let opts = carpio::daemon::Options {
                file: cli.file,
                defines: cli.define,
                verbose: cli.verbose,
            };
            if cli.check {
                let (code, out) = carpio::daemon::check(&opts);
                eprint!("{out}");
                return ExitCode::from(code as u8);
            }
            // carpio always runs in the foreground (-d is accepted for relayd's muscle memory);
            // run it under a supervisor to detach.
            let _ = cli.foreground;
            match carpio::daemon::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("carpio: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
