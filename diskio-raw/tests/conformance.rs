//! The conformance suite on the io_uring backend: with its defaults, through the object-safe
//! form, with linked write and sync, squeezed (a tiny ring, few operations in flight, no
//! registered files or buffers), and with a kernel thread polling the submission queue.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step panics

mod static_form {
    conformance::suite!(diskio_raw::RawDisk::with_defaults());
}

mod dyn_form {
    use std::sync::Arc;

    use diskio::DynDiskIo;

    fn make() -> diskio::Result<Arc<dyn DynDiskIo>> {
        let disk = diskio_raw::RawDisk::with_defaults()?;
        Ok(Arc::new(disk))
    }

    conformance::suite!(make());
}

mod linked_sync {
    // `write_sync_at` as a WRITEV linked to an FSYNC instead of one RWF_DSYNC write.
    conformance::suite!(diskio_raw::RawDisk::new(
        diskio_raw::RawOptions::new().linked_sync(true)
    ));
}

mod squeezed {
    // Four ring entries, two operations in flight, nothing registered: the submission queue
    // fills, callers wait for permits, and every operation uses plain descriptors and opcodes;
    // a lone durable operation goes through the ring too, not its caller's thread.
    conformance::suite!(diskio_raw::RawDisk::new(
        diskio_raw::RawOptions::new()
            .entries(4)
            .in_flight_max(2)
            .fixed_buffers(0)
            .registered_files(0)
            .lone_sync_here(false)
    ));
}

mod sqpoll {
    // A kernel thread polls the submission queue: each caller queues its entries and wakes
    // that thread if it sleeps, instead of leaving them to another caller's submission.
    conformance::suite!(diskio_raw::RawDisk::new(
        diskio_raw::RawOptions::new().sqpoll(Some(10))
    ));
}
