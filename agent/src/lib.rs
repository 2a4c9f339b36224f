//! Tabby node agent.
