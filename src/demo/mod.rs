//! Realistic provisioning traffic, generated: the bundled example logs, `scimwatch demo`'s
//! live feed and the benchmark data set all come from [`traffic`].

pub mod live;
pub mod traffic;
