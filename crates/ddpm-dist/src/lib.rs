//! Data-parallel plumbing for DDPM training: collectives, world info and a launcher.
