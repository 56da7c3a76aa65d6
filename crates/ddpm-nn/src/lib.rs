//! Building blocks with correct gradients.
