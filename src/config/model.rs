//! The validated configuration: plain data, no runtime state (relayd `relayd.h` keeps
//! `host_config` apart from `host`; carpio keeps `HostConfig` apart from the health tracker's
//! state). Defaults are relayd's (`relayd.h`) unless carpio-only.

use std::net::IpAddr;
use std::time::Duration;

use super::{Diagnostic, Span};

/// relayd `CHECK_INTERVAL`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// relayd `CHECK_TIMEOUT`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// relayd `RELAY_TIMEOUT` (session timeout), also the pf state timeout of a redirect.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(600);
/// relayd `RELAY_NUMPROC`.
pub const DEFAULT_PREFORK: u32 = 3;
/// relayd `RELAY_BACKLOG`.
pub const DEFAULT_BACKLOG: u32 = 10;
/// relayd `RELAY_MAXHEADERLENGTH` default.
pub const DEFAULT_HEADERLEN: u32 = 8192;
/// Maglev lookup table size: prime, as the Maglev paper (NSDI'16, section 3.4) requires.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65537;
/// carpio flow table entries per worker.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1 << 20;
/// relayd control socket path, renamed for carpio.
pub const DEFAULT_CONTROL_SOCKET: &str = "/var/run/carpio.sock";
/// GUE's IANA port (draft-ietf-intarea-gue).
pub const DEFAULT_GUE_PORT: u16 = 6080;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub global: GlobalConfig,
    pub interfaces: Vec<InterfaceConfig>,
    pub groups: Vec<GroupConfig>,
    /// Tables as used: one per (table, port) pair, named `name:port` (relayd `table_inherit`).
    pub tables: Vec<TableConfig>,
    pub redirects: Vec<RedirectConfig>,
    pub relays: Vec<RelayConfig>,
    pub protocols: Vec<ProtocolConfig>,
    pub routers: Vec<RouterConfig>,
    pub carp: Vec<CarpConfig>,
    pub pfsync: Option<PfsyncConfig>,
    /// Route health injection through a local BIRD (`bird { ... }`, at most one).
    pub bird: Option<BirdConfig>,
    /// Warnings of the semantic pass (e.g. unused tables).
    pub warnings: Vec<Diagnostic>,
}

impl Config {
    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|t| t.name == name)
    }
    pub fn redirect(&self, name: &str) -> Option<&RedirectConfig> {
        self.redirects.iter().find(|r| r.name == name)
    }
    pub fn relay(&self, name: &str) -> Option<&RelayConfig> {
        self.relays.iter().find(|r| r.name == name)
    }
    pub fn protocol(&self, name: &str) -> Option<&ProtocolConfig> {
        self.protocols.iter().find(|p| p.name == name)
    }
    /// Every host of every used table, in id order.
    pub fn hosts(&self) -> impl Iterator<Item = &HostConfig> {
        self.tables.iter().flat_map(|t| t.hosts.iter())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GlobalConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub prefork: u32,
    pub log: LogConfig,
    pub agentx: Option<AgentxConfig>,
    /// `socket "path"` / `control socket "path"`.
    pub control_socket: String,
    pub workers: Option<u32>,
    pub flow_table_size: u32,
    pub maglev_table_size: u32,
    pub metrics: Option<ListenConfig>,
    /// `user NAME`: privilege drop after setup.
    pub user: Option<String>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            prefork: DEFAULT_PREFORK,
            log: LogConfig::default(),
            agentx: None,
            control_socket: DEFAULT_CONTROL_SOCKET.into(),
            workers: None,
            flow_table_size: DEFAULT_FLOW_TABLE_SIZE,
            maglev_table_size: DEFAULT_MAGLEV_TABLE_SIZE,
            metrics: None,
            user: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// `log state changes` (default) vs `log host checks` (every check result).
    pub host_checks: bool,
    /// `log connection`.
    pub connections: bool,
    /// `log connection errors`.
    pub connection_errors: bool,
    /// `log level verbose`.
    pub verbose: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentxConfig {
    pub context: Option<String>,
    pub path: Option<String>,
    /// Written as the older `snmp [trap]` spelling.
    pub snmp_trap: bool,
}

/// An address as written: an IP literal, or a name resolved later (DNS name, interface, group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Ip(IpAddr),
    Name(String),
}

impl Address {
    pub fn parse(s: &str) -> Self {
        s.parse()
            .map(Address::Ip)
            .unwrap_or_else(|_| Address::Name(s.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    Afxdp,
    Afpacket,
    Pnet,
}

/// The TPACKET ring layout of `ingress afpacket` (`ring v2|v3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketRing {
    V2,
    V3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    Native,
    Generic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub name: String,
    pub ingress: Ingress,
    pub queues: Option<u32>,
    pub mode: Option<XdpMode>,
    /// `ring v2|v3` (afpacket only); `None` = the daemon's default (V3).
    pub ring: Option<PacketRing>,
    pub span: Span,
}

/// An interface group with its carp demotion counter (`ifconfig -g GROUP carpdemote N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub name: String,
    pub demote: u8,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// A port or `lo:hi` range (relayd `port PORT[:PORT]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    pub addr: Address,
    pub proto: Proto,
    pub port: PortRange,
    pub interface: Option<String>,
    pub pflog: bool,
    /// Relays: `listen on ... tls`.
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Sequential from 1 across the config (relayd `last_host_id`).
    pub id: u32,
    pub addr: Address,
    pub retry: u32,
    pub parent: Option<u32>,
    pub priority: Option<u8>,
    pub ip_ttl: Option<u8>,
    /// carpio: `lladdr XX:XX:XX:XX:XX:XX`, the host's link-layer address when it is static
    /// (replay, static neighbours); otherwise the daemon resolves it.
    pub lladdr: Option<[u8; 6]>,
    /// carpio: `weight N` (1..=65535, default 1), the host's share in weighted Maglev.
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKey {
    /// No key given: relayd makes a random one at load time.
    Random,
    /// relayd's `union hashkey` as four 32-bit words (the SipHash key is these words in host
    /// memory order): from `0x` + 32 hex digits, or the MD5 of a string, both read big-endian.
    Key([u32; 4]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    RoundRobin,
    Random,
    SourceHash(HashKey),
    LeastStates,
    Loadbalance(HashKey),
    Hash(HashKey),
    /// carpio: weighted Maglev consistent hashing of the flow (NSDI'16 §3.4), identical on
    /// every node with the same configuration.
    Maglev,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Md5([u8; 16]),
    Sha1([u8; 20]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpExpect {
    Code(u16),
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// No check: the hosts count as up.
    None,
    Icmp,
    Tcp,
    Tls,
    Http {
        tls: bool,
        path: String,
        host: Option<String>,
        expect: HttpExpect,
    },
    /// `send DATA|nothing expect GLOB [tls]`: DATA and GLOB as written; backslash escapes
    /// such as `\r\n` are left for the check to translate (relayd `translate_string`).
    Send {
        send: Vec<u8>,
        expect: String,
        tls: bool,
    },
    Binary {
        send: Vec<u8>,
        expect: Vec<u8>,
        tls: bool,
    },
    Script {
        path: String,
    },
    /// carpio extension `check dns "NAME" [type A|AAAA] [rcode NAME|N] [answer ADDR]`: a UDP
    /// query for NAME; up when the reply has the rcode (default NOERROR) and, if given, ADDR
    /// among its answers. relayd has no DNS check (its `check send` is TCP only).
    Dns {
        name: String,
        /// RFC 1035 QTYPE: 1 (A) or 28 (AAAA, RFC 3596).
        qtype: u16,
        /// RFC 1035 RCODE, 0..=15.
        rcode: u8,
        answer: Option<IpAddr>,
    },
    /// carpio extension `check ntp`: an RFC 5905 client-mode request; up on a server-mode
    /// reply with stratum 1..=15 and a transmit time near the local clock.
    Ntp,
    /// carpio extension `check smtp`: RFC 5321 220 banner, EHLO answered by 250, QUIT.
    Smtp,
}

/// A table as used by one redirect/relay/router with one port (relayd copies it as `name:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// `name:port` (`name` alone for a router's table given no port).
    pub name: String,
    /// The table's own name as written in `table <name>`.
    pub base: String,
    pub port: Option<u16>,
    pub check: Check,
    pub timeout: Duration,
    pub interval: Duration,
    pub demote: Option<String>,
    pub mode: Mode,
    pub disabled: bool,
    pub hosts: Vec<HostConfig>,
}

/// How a redirect delivers packets to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardMode {
    /// Destination NAT (relayd `forward to`, pf rdr-to). The default.
    Nat,
    /// Direct server return (relayd `route to ... interface IF`, pf route-to).
    Dsr { interface: String },
    /// IP-in-IP (RFC 2003).
    Ipip,
    /// Generic UDP Encapsulation to this UDP port.
    Gue { port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectConfig {
    pub name: String,
    pub listen: Vec<ListenConfig>,
    /// Used table names (`name:port`); the first is the main table, the second the backup.
    pub tables: Vec<String>,
    pub forward: ForwardMode,
    pub session_timeout: Duration,
    pub sticky: bool,
    pub tag: Option<String>,
    /// `match pftag` rather than `pftag`.
    pub match_tag: bool,
    pub disabled: bool,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayTarget {
    Table(String),
    Address {
        addr: Address,
        port: Option<u16>,
        retry: u32,
        inet: bool,
        inet6: Option<Prefix>,
    },
    Destination,
    NatLookup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayForward {
    pub target: RelayTarget,
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    pub name: String,
    pub listen: Vec<ListenConfig>,
    pub forwards: Vec<RelayForward>,
    pub transparent: bool,
    pub protocol: Option<String>,
    pub session_timeout: Duration,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub disabled: bool,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolKind {
    Tcp,
    Http,
    Dns,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpOptions {
    pub nodelay: bool,
    pub sack: bool,
    pub splice: bool,
    pub backlog: u32,
    pub socket_buffer: Option<u32>,
    pub ip_ttl: Option<u8>,
    pub ip_minttl: Option<u8>,
}

impl Default for TcpOptions {
    fn default() -> Self {
        // relayd.h: splice on, backlog RELAY_BACKLOG, nodelay and sack off.
        Self {
            nodelay: false,
            sack: false,
            splice: true,
            backlog: DEFAULT_BACKLOG,
            socket_buffer: None,
            ip_ttl: None,
            ip_minttl: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keypair {
    pub name: String,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub ocsp: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    pub ca_cert: Option<String>,
    pub ca_file: Option<String>,
    pub ca_key: Option<(String, Option<String>)>,
    pub ciphers: Option<String>,
    pub client_ca: Option<String>,
    pub client_renegotiation: bool,
    pub ecdhe: Option<String>,
    pub edh: Option<String>,
    pub keypairs: Vec<Keypair>,
    pub cipher_server_preference: bool,
    pub session_tickets: bool,
    pub tlsv1_2: bool,
    pub tlsv1_3: bool,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            ca_cert: None,
            ca_file: None,
            ca_key: None,
            ciphers: None,
            client_ca: None,
            client_renegotiation: false,
            ecdhe: None,
            edh: None,
            keypairs: Vec::new(),
            cipher_server_preference: true,
            session_tickets: false,
            tlsv1_2: true,
            tlsv1_3: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    pub headerlen: u32,
    pub websockets: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            headerlen: DEFAULT_HEADERLEN,
            websockets: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    Block,
    Pass,
    Match,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleDir {
    Request,
    Response,
}

/// What a key/value rule option looks at (relayd `enum key_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    Cookie,
    Header,
    Path,
    Query,
    Url,
}

/// What it does with it (relayd `enum key_option`); `None` only matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvAction {
    None,
    Append,
    Set,
    Remove,
    Hash,
    Log,
    /// `path strip N`: the value holds N.
    Strip,
}

/// One `TYPE [ACTION] [[pattern] KEY | digest KEY] [value [pattern] VALUE]` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleKv {
    pub kind: KvType,
    pub action: KvAction,
    pub key: Option<String>,
    /// `url digest KEY`: the key is the SHA1 or MD5 hex of the URL.
    pub digest: bool,
    /// `pattern`: Lua-style patterns instead of shell globs (relayd 1.224).
    pub key_pattern: bool,
    /// `value` defaults to `*` when a key is given (parse.y).
    pub value: Option<String>,
    pub value_pattern: bool,
}

/// Set or clear (`no tag`, `no label`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    Set(String),
    Clear,
}

/// An HTTP filter rule (relayd `filterrule`): kept as data for the relay, evaluated first to
/// last there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRule {
    pub action: RuleAction,
    /// `request` unless written `response` (parse.y `dir`).
    pub dir: RuleDir,
    pub quick: bool,
    /// `inet` (false) / `inet6` (true).
    pub inet6: Option<bool>,
    pub from: Option<Prefix>,
    pub to: Option<Prefix>,
    pub method: Option<String>,
    pub kvs: Vec<RuleKv>,
    pub forward_to: Option<String>,
    pub tag: Option<Setting>,
    pub tagged: Option<String>,
    pub label: Option<Setting>,
    /// `file PATH`: one key per line, for the last key/value option.
    pub file: Option<String>,
    /// The rule's words after `[quick]`, as written (for messages and `show`).
    pub words: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolConfig {
    pub name: String,
    pub kind: ProtocolKind,
    pub tcp: TcpOptions,
    pub tls: TlsOptions,
    pub http: HttpOptions,
    /// `return error [style "CSS"]`: Some(style).
    pub return_error: Option<Option<String>>,
    pub rules: Vec<FilterRule>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    pub name: String,
    pub routes: Vec<Prefix>,
    pub table: String,
    pub rtable: Option<u32>,
    pub rtlabel: Option<String>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancing {
    None,
    Ip,
    IpStealth,
    IpUnicast,
    /// Historical (ip_carp.c 1.263), kept for old configurations.
    Arp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarpNode {
    pub vhid: u8,
    pub advskew: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarpConfig {
    /// The carp interface, e.g. `carp0`.
    pub name: String,
    pub carpdev: Option<String>,
    /// The vhosts; a plain `vhid N advskew S` is one node.
    pub nodes: Vec<CarpNode>,
    pub advbase: u8,
    pub pass: Option<String>,
    pub carppeer: Option<IpAddr>,
    pub balancing: Balancing,
    pub groups: Vec<String>,
    pub preempt: bool,
    pub addresses: Vec<Prefix>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfsyncConfig {
    pub syncdev: Option<String>,
    pub syncpeer: Option<IpAddr>,
    /// pfsync.4 `maxupd`, default 128.
    pub maxupd: u8,
    pub defer: bool,
    pub span: Span,
}

/// Debian bird2's control socket (`/run/bird/bird.ctl`).
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";
/// How long a drain keeps serving the flows that still arrive after the withdrawal.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The TUN device the announced routes point at (`bird { device NAME }`, `crate::sys::tun`).
pub const DEFAULT_BIRD_DEVICE: &str = "carpio-rt";

/// `bird { socket "PATH", routes "PATH", drain timeout N }`: carpio writes the virtual
/// addresses it should receive into `routes` (BIRD `protocol static` blocks the operator's
/// bird.conf includes) and asks BIRD over `socket` to reconfigure (`crate::route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdConfig {
    pub socket: String,
    pub routes: String,
    /// 0: `stop` does not drain (withdraw and stop at once).
    pub drain_timeout: Duration,
    /// The non-persistent TUN device the routes go `via`: it dies with the process, and BIRD
    /// (`check link`) withdraws the routes with it.
    pub device: String,
    pub span: Span,
}
