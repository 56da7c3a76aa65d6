//! Sample-quality evaluation for the DDPM toolkit (work in progress).
