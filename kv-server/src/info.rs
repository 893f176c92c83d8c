//! `INFO` and `CLIENT INFO`/`LIST`: text in Redis's format
//! (`# Section` headers, `field:value` lines, `\r\n` line ends).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::server::{ClientInfo, State};

/// The `INFO` text: every section, or the one asked for (`server`,
/// `clients`, `memory`, `persistence`, `stats`, `keyspace`; `all` and
/// `everything` give every one).
pub(crate) fn info(state: &State, section: Option<&[u8]>) -> String {
    let want = |name: &str| {
        section.is_none_or(|s| {
            s == b"all" || s == b"everything" || s == b"default" || s == name.as_bytes()
        })
    };
    let mut out = String::new();
    let stats = state.db.stats();
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:7.0.0\r\nkv_version:{}\r\nredis_mode:standalone\r\n\
             os:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\
             uptime_in_days:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            state.port,
            state.started.elapsed().as_secs(),
            state.started.elapsed().as_secs() / 86_400,
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
            state.connected.load(Ordering::Relaxed),
            state.config.maxclients,
        );
    }
    if want("memory") {
        let _ = write!(
            out,
            "# Memory\r\nkv_index_memory_bytes:{}\r\n\r\n",
            stats.index_memory,
        );
    }
    if want("persistence") {
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\naof_enabled:1\r\nkv_sync:{:?}\r\n\
             rdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nkv_disk_bytes:{}\r\n\
             kv_live_bytes:{}\r\nkv_segments:{}\r\n\r\n",
            state.config.sync,
            u8::from(state.save.running.load(Ordering::Relaxed)),
            state.save.last.load(Ordering::Relaxed),
            stats.segment_bytes + stats.wal_bytes,
            stats.live_bytes,
            stats.segments,
        );
    }
    if want("stats") {
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\n\
             kv_gets:{}\r\nkv_puts:{}\r\nkv_deletes:{}\r\nkv_compactions:{}\r\n\r\n",
            state.total_connections.load(Ordering::Relaxed),
            state.total_commands.load(Ordering::Relaxed),
            state.rejected_connections.load(Ordering::Relaxed),
            state.bytes_in.load(Ordering::Relaxed),
            state.bytes_out.load(Ordering::Relaxed),
            stats.gets,
            stats.puts,
            stats.deletes,
            stats.compactions,
        );
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        let keys = state.db.len();
        if keys > 0 {
            let _ = write!(out, "db0:keys={keys},expires=0,avg_ttl=0\r\n");
        }
        out.push_str("\r\n");
    }
    out
}

/// One line of `CLIENT LIST` for client `id`.
pub(crate) fn client_line(id: u64, info: &ClientInfo) -> String {
    format!(
        "id={id} addr={} name={} age={} db=0\n",
        info.addr,
        String::from_utf8_lossy(&info.name),
        info.connected_at.elapsed().as_secs()
    )
}
