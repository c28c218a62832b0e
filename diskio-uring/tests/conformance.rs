//! The conformance suite on the tokio-uring backend: with its defaults, through the object-safe
//! form, squeezed (a tiny ring, one job in flight, a queue of one), and spread over several
//! executors.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step panics

mod static_form {
    conformance::suite!(diskio_uring::UringDisk::with_defaults());
}

mod dyn_form {
    use std::sync::Arc;

    use diskio::DynDiskIo;

    fn make() -> diskio::Result<Arc<dyn DynDiskIo>> {
        let disk = diskio_uring::UringDisk::with_defaults()?;
        Ok(Arc::new(disk))
    }

    conformance::suite!(make());
}

mod squeezed {
    // Two ring entries, one job in flight and one queued: callers wait for room in the queue,
    // and the executor for its one permit.
    conformance::suite!(diskio_uring::UringDisk::new(
        diskio_uring::UringOptions::new()
            .entries(2)
            .in_flight_max(1)
            .queue_max(1)
    ));
}

mod three_executors {
    // Every operation through the executors, a lone sync too.
    conformance::suite!(diskio_uring::UringDisk::new(
        diskio_uring::UringOptions::new()
            .executors(3)
            .lone_sync_here(false)
    ));
}
