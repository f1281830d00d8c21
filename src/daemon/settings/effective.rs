//! The effective settings as `check-config` prints them: every key in
//! `KNOWN_KEYS` order, written so that the output parses back into the
//! same settings.

use std::time::Duration;

use super::values::{escape_controls, mask};
use super::{FactSource, Settings};

impl Settings {
    /// Every effective setting as `(key, value)`, in `KNOWN_KEYS` order, for
    /// `check-config`. Writing them back as `key = value` lines yields the
    /// same settings, except that a non-empty `mysql_password` and a static
    /// `surveyclient_server_guid` (a raw identifier) are masked, and a value
    /// that itself begins with `$` (only possible through a `$VAR`
    /// substitution) would be substituted again. Control characters (a
    /// newline from a `$VAR`, say) are shown escaped, as `\n`, so that one
    /// setting is always one line and cannot fake others.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        self.effective_raw()
            .into_iter()
            .map(|(key, value)| (key, escape_controls(&value)))
            .collect()
    }

    fn effective_raw(&self) -> Vec<(&'static str, String)> {
        let seconds = |d: Duration| d.as_secs().to_string();
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        let text = |s: &Option<String>| s.clone().unwrap_or_default();
        let facts: Vec<String> = self.facts.iter().map(FactSource::to_string).collect();
        let omit: Vec<&str> = self.omit.iter().map(String::as_str).collect();
        vec![
            ("surveyclient_url", self.url.to_string()),
            ("surveyclient_interval", seconds(self.interval)),
            ("surveyclient_ssl_verify", yes_no(self.ssl_verify)),
            (
                "surveyclient_collector_key",
                self.collector_keys
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            ("surveyclient_timeout", seconds(self.timeout)),
            ("surveyclient_start_delay", seconds(self.start_delay)),
            ("surveyclient_error_delay", seconds(self.error_delay)),
            (
                "surveyclient_audit_log",
                self.audit_log.display().to_string(),
            ),
            (
                "surveyclient_audit_max_size",
                self.audit_max_size.to_string(),
            ),
            ("surveyclient_audit_keep", self.audit_keep.to_string()),
            (
                "surveyclient_state_dir",
                self.state_dir.display().to_string(),
            ),
            (
                "surveyclient_machine_id_file",
                self.machine_id_file.display().to_string(),
            ),
            (
                "surveyclient_id_hash",
                self.id_hash.config_name().to_string(),
            ),
            ("surveyclient_app_id", hex::encode(self.app_id)),
            ("surveyclient_omit", omit.join(" ")),
            ("surveyclient_bucket_counts", yes_no(self.bucket_counts)),
            ("surveyclient_facts", facts.join("; ")),
            ("surveyclient_program_name", text(&self.program_name)),
            ("surveyclient_program_version", text(&self.program_version)),
            (
                "surveyclient_server_guid",
                // A raw identifier is never printed, not even to the admin:
                // check-config output ends up in tickets and pastebins.
                match &self.server_guid {
                    Some(_) => "(set, not shown)".to_string(),
                    None => String::new(),
                },
            ),
            ("user_plugin", text(&self.user_plugin)),
            ("attachment_storage", text(&self.attachment_storage)),
            ("mysql_host", self.mysql.host.clone()),
            ("mysql_port", self.mysql.port.to_string()),
            ("mysql_user", self.mysql.user.clone()),
            ("mysql_password", mask(&self.mysql.password).to_string()),
            (
                "mysql_socket",
                self.mysql
                    .socket
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("mysql_database", self.mysql.database.clone()),
            (
                "surveyclient_mysql_ssl_ca",
                self.mysql
                    .ssl_ca
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
        ]
    }
}
