//! The certificates of a serve: kept in the store (so that every node of
//! a fleet, when there is one, serves the same), parsed once, and handed
//! to the [`CertificateResolver`] whole after every change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::{
    Certificate, CertificateInfo, CertificateResolver, CertificateSource, HostPattern, TlsError,
};
use crate::model::now_millis;
use crate::store::{CertificateRecord, ServiceStore};

/// The stored certificates and the resolver that serves them.
pub struct Certificates {
    store: Arc<dyn ServiceStore>,
    resolver: Arc<CertificateResolver>,
    /// The parsed certificates; held while a change is written, so the
    /// store and the resolver agree.
    current: Mutex<BTreeMap<HostPattern, Certificate>>,
}

impl Certificates {
    /// Loads the stored certificates. One that no longer parses is left
    /// out (and logged), not fatal: the others are still served.
    pub fn load(store: Arc<dyn ServiceStore>) -> Result<Arc<Certificates>, TlsError> {
        let current = read_all(store.as_ref())?;
        let resolver = Arc::new(CertificateResolver::default());
        resolver.replace(current.values());
        Ok(Arc::new(Certificates {
            store,
            resolver,
            current: Mutex::new(current),
        }))
    }

    /// Reads the stored certificates again and serves them (another node
    /// of the fleet added, renewed or removed one): handshakes after this
    /// get them.
    pub fn reload(&self) -> Result<(), TlsError> {
        let mut current = self.current();
        *current = read_all(self.store.as_ref())?;
        self.resolver.replace(current.values());
        Ok(())
    }

    pub fn resolver(&self) -> Arc<CertificateResolver> {
        Arc::clone(&self.resolver)
    }

    fn current(&self) -> MutexGuard<'_, BTreeMap<HostPattern, Certificate>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every certificate, by host (the default first).
    pub fn list(&self) -> Vec<CertificateInfo> {
        self.current().values().map(|c| c.info.clone()).collect()
    }

    /// Adds or replaces the certificate of `pattern`. Bad input changes
    /// nothing; handshakes after this one get the new certificate.
    pub fn add(
        &self,
        pattern: HostPattern,
        cert_pem: &str,
        key_pem: &str,
        source: CertificateSource,
    ) -> Result<CertificateInfo, TlsError> {
        let certificate = Certificate::parse(pattern, cert_pem, key_pem, source, now_millis())?;
        certificate.check_not_expired(SystemTime::now())?;
        let mut current = self.current();
        self.store.save_certificate(&CertificateRecord {
            host: certificate.pattern.to_string(),
            cert_pem: certificate.cert_pem.clone(),
            key_pem: certificate.key_pem.clone(),
            source: source.as_str().to_owned(),
            updated_at: certificate.info.updated_at,
        })?;
        let info = certificate.info.clone();
        current.insert(certificate.pattern.clone(), certificate);
        self.resolver.replace(current.values());
        tracing::info!(
            host = info.host,
            issuer = info.issuer,
            source = %info.source,
            "certificate stored; new TLS connections get it"
        );
        Ok(info)
    }

    /// Removes the certificate of `pattern`.
    pub fn remove(&self, pattern: &HostPattern) -> Result<CertificateInfo, TlsError> {
        let mut current = self.current();
        let Some(certificate) = current.get(pattern) else {
            return Err(TlsError::NotFound(pattern.to_string()));
        };
        let info = certificate.info.clone();
        self.store.delete_certificate(&pattern.to_string())?;
        current.remove(pattern);
        self.resolver.replace(current.values());
        tracing::info!(host = info.host, "certificate removed");
        Ok(info)
    }
}

fn parse_record(record: &CertificateRecord) -> Result<Certificate, TlsError> {
    let pattern: HostPattern = record.host.parse()?;
    let source = record
        .source
        .parse()
        .map_err(|e: String| TlsError::BadCertificate(e))?;
    Certificate::parse(
        pattern,
        &record.cert_pem,
        &record.key_pem,
        source,
        record.updated_at,
    )
}

/// The stored certificates, parsed; one that no longer parses is left out
/// (and logged).
fn read_all(store: &dyn ServiceStore) -> Result<BTreeMap<HostPattern, Certificate>, TlsError> {
    let mut current = BTreeMap::new();
    for record in store.certificates()? {
        match parse_record(&record) {
            Ok(certificate) => {
                current.insert(certificate.pattern.clone(), certificate);
            }
            Err(error) => tracing::error!(
                host = record.host,
                %error,
                "a stored certificate cannot be used; add it again with `switchyard tls add`"
            ),
        }
    }
    Ok(current)
}
