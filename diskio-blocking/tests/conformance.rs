//! The conformance suite on the blocking backend: statically, and through the object-safe form.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step panics

mod static_form {
    conformance::suite!(diskio_blocking::BlockingDisk::with_defaults());
}

mod dyn_form {
    use std::sync::Arc;

    use diskio::DynDiskIo;

    fn make() -> diskio::Result<Arc<dyn DynDiskIo>> {
        let disk = diskio_blocking::BlockingDisk::with_defaults()?;
        Ok(Arc::new(disk))
    }

    conformance::suite!(make());
}

mod small_pool {
    // One thread and a queue of two: everything still works, only slower (backpressure).
    // Every operation goes through the worker, a lone sync too, and a durable write is a write
    // and then a sync rather than one `RWF_DSYNC` write.
    conformance::suite!(diskio_blocking::BlockingDisk::new(
        diskio_blocking::BlockingOptions::new()
            .threads(1)
            .in_flight_max(2)
            .spin(std::time::Duration::ZERO)
            .lone_sync_here(false)
            .dsync_write(false)
    ));
}
