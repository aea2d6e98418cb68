//! Security for Sluice: what the broker, the workers and the clients share.
//!
//! * [`civil`]: calendar dates from days since the Unix epoch, and back;
//! * [`key`]: the cluster key every node holds, and the keys derived from it;
//! * [`mac`]: tokens the cluster hands out with a MAC (receipt handles, shard
//!   iterators);
//! * [`seal`]: access keys' secrets as the replicated state keeps them;
//! * [`credentials`]: access key ids and secrets, and where clients find them;
//! * [`sigv4`]: AWS Signature Version 4, to sign calls and to check them;
//! * [`signer`]: a tower layer that signs every gRPC call a client makes;
//! * [`policy`]: IAM-style identity policies and their evaluation;
//! * [`tls`]: rustls on both sides, with certificates reloaded from files;
//! * [`connection`]: how many connections a node keeps, and for how long idle;
//! * [`identity`]: what a client certificate says about who presents it.
//!
//! `docs/security.md` gives the threat model these serve.

pub mod civil;
#[cfg(feature = "transport")]
pub mod connection;
pub mod credentials;
#[cfg(feature = "transport")]
pub mod identity;
pub mod key;
pub mod mac;
#[cfg(feature = "transport")]
pub mod pki;
pub mod policy;
pub mod seal;
#[cfg(feature = "transport")]
pub mod signer;
#[cfg(feature = "transport")]
pub mod sigv4;
#[cfg(feature = "transport")]
pub mod tls;

pub use credentials::Credentials;
pub use key::{ClusterKey, Purpose};
