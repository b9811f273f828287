//! carpioctl(8): relayctl(8)'s commands against a running carpio, with relayctl's output and
//! exit status, plus `show carp`, `show states`, `show counters` and `-j` for JSON.
//! Keywords may be abbreviated to any unique prefix (`carpioctl sh h`).
use carpio::ctl::client::Client;
use carpio::ctl::proto::{DEFAULT_SOCKET, Object, Request, Response, Show};
use carpio::ctl::render;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "carpioctl",
    version,
    about = "control the carpio daemon",
    infer_subcommands = true,
    disable_help_subcommand = true
)]
struct Cli {
    /// Control socket.
    #[arg(short = 's', value_name = "socket", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print replies as JSON.
    #[arg(short = 'j')]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
#[command(infer_subcommands = true, disable_help_subcommand = true)]
enum ShowCmd {
    /// Redirects, relays, routers, tables and hosts.
    Summary,
    /// Tables and hosts, with check totals.
    Hosts,
    /// Redirects and their statistics.
    Redirects,
    /// Relays and their statistics.
    Relays,
    /// Routers and their routes.
    Routers,
    /// Active relay sessions.
    Sessions,
    /// carp vhosts and counters.
    Carp,
    /// Flow states of the data plane.
    States,
    /// Every named counter, drop reasons included.
    Counters,
    /// Packets, bytes, flows and states per virtual service and per backend host.
    Traffic,
}

#[derive(Subcommand, Debug)]
#[command(infer_subcommands = true, disable_help_subcommand = true)]
enum OnOff {
    /// Disable NAME or ID.
    Disable { target: String },
    /// Enable NAME or ID.
    Enable { target: String },
}

#[derive(Subcommand, Debug)]
#[command(infer_subcommands = true, disable_help_subcommand = true)]
enum LogLevel {
    Brief,
    Verbose,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show information.
    #[command(subcommand)]
    Show(ShowCmd),
    /// Disable or enable a host (in every table it is in).
    #[command(subcommand)]
    Host(OnOff),
    /// Disable or enable a table.
    #[command(subcommand)]
    Table(OnOff),
    /// Disable or enable a redirect.
    #[command(subcommand)]
    Redirect(OnOff),
    /// Reload the configuration file.
    Reload,
    /// Load FILE as the new configuration.
    Load { file: String },
    /// Stream every event the daemon reports.
    Monitor,
    /// Run all health checks now.
    Poll,
    /// Change log verbosity.
    #[command(subcommand)]
    Log(LogLevel),
    /// Shut the daemon down.
    Stop,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (req, what) = match cli.cmd {
        Cmd::Show(s) => {
            let what = match s {
                ShowCmd::Summary => Show::Summary,
                ShowCmd::Hosts => Show::Hosts,
                ShowCmd::Redirects => Show::Redirects,
                ShowCmd::Relays => Show::Relays,
                ShowCmd::Routers => Show::Routers,
                ShowCmd::Sessions => Show::Sessions,
                ShowCmd::Carp => Show::Carp,
                ShowCmd::States => Show::States,
                ShowCmd::Counters => Show::Counters,
                ShowCmd::Traffic => Show::Traffic,
            };
            (Request::Show { what }, Some(what))
        }
        Cmd::Host(t) => (set(Object::Host, t), None),
        Cmd::Table(t) => (set(Object::Table, t), None),
        Cmd::Redirect(t) => (set(Object::Redirect, t), None),
        Cmd::Reload => (Request::Reload, None),
        Cmd::Load { file } => (Request::Load { path: file }, None),
        Cmd::Monitor => (Request::Monitor, None),
        Cmd::Poll => (Request::Poll, None),
        Cmd::Log(l) => (
            Request::Log {
                verbose: matches!(l, LogLevel::Verbose),
            },
            None,
        ),
        Cmd::Stop => (Request::Stop, None),
    };
    let monitor = req == Request::Monitor;
    let mut client = match Client::connect(&cli.socket, monitor.then(|| Duration::from_secs(3600)))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("carpioctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = client.send(&req) {
        eprintln!("carpioctl: {e}");
        return ExitCode::FAILURE;
    }
    if let Request::Log { .. } = req {
        println!("logging request sent.");
    }
    let mut failed = false;
    loop {
        let resp = match client.recv() {
            Ok(Some(r)) => r,
            Ok(None) if monitor => return ExitCode::SUCCESS,
            Ok(None) => {
                eprintln!("carpioctl: pipe closed");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("carpioctl: {e}");
                return ExitCode::FAILURE;
            }
        };
        if cli.json {
            print!("{}", carpio::ctl::proto::to_line(&resp));
        } else {
            print!("{}", text(&resp, what));
        }
        match resp {
            Response::Failed { .. } | Response::Error { .. } => failed = true,
            Response::Event { .. } if monitor => continue,
            _ => {}
        }
        break;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn set(object: Object, t: OnOff) -> Request {
    match t {
        OnOff::Disable { target } => Request::Set {
            object,
            target,
            enable: false,
        },
        OnOff::Enable { target } => Request::Set {
            object,
            target,
            enable: true,
        },
    }
}

fn text(resp: &Response, what: Option<Show>) -> String {
    match resp {
        Response::Ok => "command succeeded\n".into(),
        Response::Failed { reason } => format!("command failed: {reason}\n"),
        Response::Error { message } => {
            format!("carpioctl: daemon rejected the request: {message}\n")
        }
        Response::Summary { items } => render::summary(items, what.unwrap_or(Show::Summary)),
        Response::Sessions { sessions } => render::sessions(sessions),
        Response::Carp { vhosts, counters } => render::carp(vhosts, counters),
        Response::States { states } => render::states(states),
        Response::Counters { counters } => render::counter_lines(counters),
        Response::Traffic { services, hosts } => render::traffic(services, hosts),
        Response::Event {
            kind,
            id,
            name,
            detail,
            timestamp,
        } => {
            let mut s = format!("{kind}: id {id}");
            if !name.is_empty() {
                s.push_str(&format!(", name {name}"));
            }
            if !detail.is_empty() {
                s.push_str(&format!(", {detail}"));
            }
            s.push_str(&format!("\n\ttimestamp: {timestamp}\n"));
            s
        }
    }
}
