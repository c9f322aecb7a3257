//! The priority of the daemon's background threads: work no answer waits for (the ledger
//! writer's batch commits of journaled rows, the prompt recorder's walk of a finished stream's
//! body) runs at `nice` 19, so that on a small VPS's one core the scheduler hands the core to a
//! tokio worker with an answer to send first.

/// Run the calling thread at the lowest priority, `nice` 19; `what` names the thread in the
/// log if the system refuses.
///
/// At normal priority such a thread's work delays the answers that arrive while it runs by
/// its length: a batch commit started just before an answer's bytes (the added p99 at one
/// connection in bench/PROFILE.md), or the recorder's walk of a 200 KB agent's request
/// (~0.6M instructions) between a stream's usage and its end marker. At nice 19 it gets the
/// core when the workers are idle; under saturation it still runs (CFS gives every thread a
/// share), and each caller bounds what may queue for it meanwhile.
pub fn yield_core_to_answers(what: &str) {
    // On Linux nice is per thread and a thread id names that one thread; raising one's own
    // nice needs no privilege.
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
        tracing::warn!(error = %e, "{what} left at normal priority");
    }
}

/// This process's threads as (id, name, nice), read from Linux's `/proc`.
#[cfg(test)]
pub(crate) fn threads() -> Vec<(String, String, i32)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|e| {
            let tid = e.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
            // After the command name's closing parenthesis: state is field 3, nice field 19.
            let rest = &stat[stat.rfind(')')? + 2..];
            let nice = rest.split(' ').nth(16)?.parse().ok()?;
            Some((tid, comm.trim_end().to_string(), nice))
        })
        .collect()
}

/// The nice value of each of this process's threads named `name`, waiting up to 5 s for one
/// whose nice is 19 (a thread sets its own priority once it runs).
#[cfg(test)]
pub(crate) fn nice_of_threads(name: &str) -> Vec<i32> {
    let read = || -> Vec<i32> {
        threads()
            .into_iter()
            .filter(|(_, comm, _)| comm == name)
            .map(|(_, _, nice)| nice)
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let nice = read();
        if nice.contains(&19) || std::time::Instant::now() >= deadline {
            return nice;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
