//! Certificates for a TLS test broker: a CA of the test's own and a server
//! certificate it issues for the names the test asks for, made with the
//! `openssl` command in the broker's working directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The server's certificate chain (PEM), in the working directory.
pub(crate) const SERVER_CERT: &str = "server.pem";
/// The server's private key (PKCS#8 PEM), in the working directory.
pub(crate) const SERVER_KEY: &str = "server.key";

/// Issues a CA and a server certificate for `names` (IP addresses or DNS
/// names) in `dir`; returns the CA's PEM file.
pub(crate) fn issue(dir: &Path, names: &[String]) -> Result<PathBuf, Error> {
    let alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(_) => format!("IP:{n}"),
            Err(_) => format!("DNS:{n}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    let extensions = dir.join("server.ext");
    std::fs::write(
        &extensions,
        format!(
            "subjectAltName={alt_names}\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .map_err(|e| Error::Certificates(format!("writing {}: {e}", extensions.display())))?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Kavari test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    )?;
    leaf(
        dir,
        SERVER_KEY,
        "server",
        "/CN=kavari test broker",
        SERVER_CERT,
    )?;
    Ok(dir.join("ca.pem"))
}

/// A key (`key`) and a certificate (`cert`) for `subject` signed by the
/// test CA, with the extensions in `<name>.ext`.
fn leaf(dir: &Path, key: &str, name: &str, subject: &str, cert: &str) -> Result<(), Error> {
    let csr = format!("{name}.csr");
    let ext = format!("{name}.ext");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            &csr,
            "-subj",
            subject,
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            cert,
            "-extfile",
            &ext,
        ],
    )
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), Error> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| Error::Certificates(format!("running openssl (is it installed?): {e}")))?;
    if !out.status.success() {
        return Err(Error::Certificates(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// One PEM file holding the server's private key and certificate, as
/// Kafka's `ssl.keystore.type=PEM` takes them; after [`issue`].
pub(crate) fn keystore(dir: &Path) -> Result<PathBuf, Error> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| Error::Certificates(format!("reading {name}: {e}")))
    };
    let pem = format!("{}{}", read(SERVER_KEY)?, read(SERVER_CERT)?);
    let path = dir.join("server-keystore.pem");
    std::fs::write(&path, pem)
        .map_err(|e| Error::Certificates(format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

/// Issues a client certificate from the CA of [`issue`], for brokers that
/// require one (mutual TLS); returns the certificate and key PEM files.
pub(crate) fn issue_client(dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let extensions = dir.join("client.ext");
    std::fs::write(
        &extensions,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .map_err(|e| Error::Certificates(format!("writing {}: {e}", extensions.display())))?;
    leaf(
        dir,
        "client.key",
        "client",
        "/CN=kavari-test-client",
        "client.pem",
    )?;
    Ok((dir.join("client.pem"), dir.join("client.key")))
}
