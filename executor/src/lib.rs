//! The executor: runs uncached build steps in namespaced sandboxes. (Arrives with the sandbox issue.)
