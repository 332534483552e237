//! The content-addressed blob and snapshot store with its cache-key index. (Arrives with the image issue.)
