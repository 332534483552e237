//! (typed layer, being written)
