//! Parsing helpers shared by both policy families: label selectors,
//! ports (numbers, names, ranges) and CIDRs, each error with its path.

use super::rule::{PortSpec, RuleError, rerr};
use crate::api::{IntOrString, LabelSelector};
use crate::labels::Selector;
use ipnet::IpNet;
use std::net::IpAddr;

pub(super) fn compile_selector(
    s: &LabelSelector,
    default_source: &str,
    path: &str,
) -> Result<Selector, RuleError> {
    Selector::compile(s, default_source).map_err(|e| rerr(path, e.to_string()))
}

/// Parses a port (number, name, or empty/0 for all) and optional endPort.
pub(super) fn parse_port(
    port: Option<&IntOrString>,
    end_port: Option<i64>,
    path: &str,
) -> Result<PortSpec, RuleError> {
    let spec = match port {
        None => PortSpec::Any,
        Some(IntOrString::Int(i)) => number_port(*i, &format!("{path}.port"))?,
        Some(IntOrString::String(s)) if s.is_empty() => PortSpec::Any,
        Some(IntOrString::String(s)) => match s.parse::<i64>() {
            Ok(i) => number_port(i, &format!("{path}.port"))?,
            Err(_) => {
                validate_port_name(s).map_err(|r| rerr(format!("{path}.port"), r))?;
                PortSpec::Named(s.clone())
            }
        },
    };
    match (spec, end_port) {
        (s, None) | (s, Some(0)) => Ok(s),
        (PortSpec::Range(lo, _), Some(e)) => {
            if e < i64::from(lo) || e > 65535 {
                return Err(rerr(
                    format!("{path}.endPort"),
                    format!("{e} must be between port ({lo}) and 65535"),
                ));
            }
            Ok(PortSpec::Range(lo, e as u16))
        }
        (PortSpec::Named(_), Some(_)) => Err(rerr(
            format!("{path}.endPort"),
            "endPort cannot be used with a named port",
        )),
        (PortSpec::Any, Some(_)) => Err(rerr(format!("{path}.endPort"), "endPort needs a port")),
    }
}

pub(super) fn number_port(i: i64, path: &str) -> Result<PortSpec, RuleError> {
    match i {
        0 => Ok(PortSpec::Any),
        1..=65535 => Ok(PortSpec::Range(i as u16, i as u16)),
        _ => Err(rerr(path, format!("{i} is not a port (0..65535)"))),
    }
}

/// IANA service names: 1-15 chars of lowercase letters, digits and '-',
/// at least one letter, no leading/trailing/double '-'.
pub(super) fn validate_port_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is neither a port number nor a valid port name (1-15 lowercase letters, digits, '-')"
        ))
    }
}

/// Parses `a.b.c.d/n`, `a::/n`, or a bare address (a host prefix).
pub fn parse_cidr(s: &str, path: &str) -> Result<IpNet, RuleError> {
    let net = if s.contains('/') {
        s.parse::<IpNet>()
            .map_err(|_| rerr(path, format!("{s:?} is not a CIDR")))?
    } else {
        let ip: IpAddr = s
            .parse()
            .map_err(|_| rerr(path, format!("{s:?} is not a CIDR or IP address")))?;
        IpNet::from(ip)
    };
    Ok(net.trunc())
}

pub(super) fn parse_excepts(
    cidr: &IpNet,
    except: &[String],
    path: &str,
) -> Result<Vec<IpNet>, RuleError> {
    let mut out = Vec::new();
    for (i, e) in except.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let net = parse_cidr(e, &p)?;
        if !cidr.contains(&net) {
            return Err(rerr(p, format!("{net} is not inside {cidr}")));
        }
        out.push(net);
    }
    Ok(out)
}
