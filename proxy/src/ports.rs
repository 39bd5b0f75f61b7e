//! The proxy's side of its contract with the datapath: the port each
//! parser's proxy listens on (the datapath's policy map redirects to it)
//! and the mark of the proxy's upstream sockets. The one owner of these
//! numbers; the agent writes [`port_for`] into the policy map.

use policy_model::L7Parser;

/// The HTTP proxy port (HTTP/1.1, HTTP/2, gRPC, TLS).
pub const HTTP: u16 = 15001;
/// The DNS proxy port (UDP and TCP).
pub const DNS: u16 = 15053;
/// The Kafka proxy port.
pub const KAFKA: u16 = 15092;

/// The port of `parser`'s proxy.
pub fn port_for(parser: L7Parser) -> u16 {
    match parser {
        L7Parser::Http => HTTP,
        L7Parser::Dns => DNS,
        L7Parser::Kafka => KAFKA,
    }
}

/// The mark the proxy sets with `SO_MARK` on its upstream sockets, so the
/// datapath neither redirects them again nor loses the source identity
/// (redirect-ebpf's `DEFAULT_FROM_PROXY_MARK`; a test holds them equal).
pub const FROM_PROXY_MARK: u32 = 0xa00;
