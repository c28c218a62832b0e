//! For the authors of backends: the pieces every backend of this workspace is built from, so
//! that a new one refuses, counts and explains exactly as they do.
//!
//! - **Admission** ([`admit`], [`FileTable::admit`], [`crate::admitted!`]): the step every
//!   operation takes before it reaches the kernel: resolve the file, check access, range and
//!   `O_DIRECT` alignment, start the timer, and hand the buffers back on refusal. Generic and
//!   inlined: no call through a function pointer on the hot path.
//! - **Open files** ([`FileTable`], [`FileAccess`]) with `open`, `close`, `file_len` and
//!   `direct_alignment` counted alike ([`start_open`], [`FileTable::insert_opened`],
//!   [`FileTable::close_counted`], [`FileTable::file_len_counted`]), and **stats** ([`Stats`],
//!   [`OpTimer`]).
//! - **The system, asked once**: [`direct_alignment`] (`statx`), [`IOV_MAX`], [`RW_MAX`].
//! - **io_uring refusals explained** alike by every io_uring backend ([`setup_refused`],
//!   [`explain_setup_error`], [`check_opcodes`], [`check_disable_env`]).
//! - **Durable operations on the calling thread** ([`write_all_durable`], [`sync_file`]): one
//!   `pwritev2` with `RWF_DSYNC`, or the sync, for paths that run them where they are.
//! - **Write-then-sync** the provided way ([`write_then_sync`]) and the ladder after a linked
//!   one ([`finish_linked`]).
//! - **Option checks** with one wording ([`check_common`], [`check_within`],
//!   [`check_at_most`]).
//!
//! Users of a backend need none of this.

mod admit;
mod here;
mod io_uring;
mod linked;
mod options;
#[allow(unsafe_code)] // statx and getrlimit: the kernel fills structs we own
mod sys;
mod table;

pub use crate::disk::write_then_sync;
pub use crate::error::check_range;
pub use crate::stats::{COUNTED_OPS, OpTimer, Stats};
pub use admit::{Admitted, OpBufs, Refused, Request, admit, start_open};
pub use here::{sync_file, write_all_durable};
pub use io_uring::{
    check_disable_env, check_opcodes, explain_setup_error, probe_refused, setup_refused,
};
pub use linked::{Linked, finish_linked};
pub use options::{WAIT_MAX, check_at_most, check_common, check_within};
pub use sys::{IOV_MAX, RW_MAX, direct_alignment, memlock_limit};
pub use table::{Access, FileAccess, FileTable};
