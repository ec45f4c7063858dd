//! `trusted_proxies`: the addresses whose forwarded headers are believed
//! (read by `http::forwarded`).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The `trusted_proxies` setting: addresses and networks whose forwarded
/// headers are believed. Written as a list (`["10.0.0.5", "10.1.0.0/16"]`) or,
/// handy in an environment variable, one string separated by commas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ProxyList", into = "Vec<String>")]
pub struct TrustedProxies(Vec<IpNet>);

#[derive(Deserialize)]
#[serde(untagged)]
enum ProxyList {
    Text(String),
    List(Vec<String>),
}

impl TryFrom<ProxyList> for TrustedProxies {
    type Error = String;

    fn try_from(list: ProxyList) -> Result<Self, String> {
        let entries: Vec<String> = match list {
            ProxyList::Text(s) => s.split(',').map(str::to_owned).collect(),
            ProxyList::List(v) => v,
        };
        entries
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(parse_net)
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl From<TrustedProxies> for Vec<String> {
    fn from(t: TrustedProxies) -> Self {
        t.0.iter().map(ToString::to_string).collect()
    }
}

fn parse_net(entry: &str) -> Result<IpNet, String> {
    entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{entry:?} is not an IP address or a CIDR network such as 10.0.0.0/8"))
}

impl TrustedProxies {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

impl<S: AsRef<str>> FromIterator<S> for TrustedProxies {
    /// For tests and code: panics on an entry that is not an address or network.
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        TrustedProxies(
            iter.into_iter()
                .map(|s| parse_net(s.as_ref()).expect("a valid proxy address"))
                .collect(),
        )
    }
}
