//! The running of a command over one locked workspace: the stores opened and the manifest
//! replicas read (`workspace`, `lock`), the one write order of every change (`commit`), one source read fanned out to every target
//! (`fanout`), every copy stat-ed, hashed and judged (`inspect`), and block-verified reads
//! across copies (`mosaic`).
//!
//! Imports `store`, `report` (findings and the progress trait), `decide`, `record` and `config`.

pub mod commit;
pub mod fanout;
pub mod inspect;
pub mod lock;
pub mod mosaic;
pub mod shape;
pub mod workspace;
