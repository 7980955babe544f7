//! The `rolegate` binary: parse arguments and dispatch.

use std::process::ExitCode;

use clap::Parser as _;
use rolegate::cli::{Cli, Command, DevCommand, ExplainArgs, ExplainOutput, ImportCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The agent on one thread runs on the current thread: no work-stealing scheduler and no
    // cross-thread wakeups on the path of every cached answer.
    let mut runtime = match &cli.command {
        Command::Agent(args) if args.threads <= 1 => tokio::runtime::Builder::new_current_thread(),
        Command::Agent(args) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(args.threads);
            builder
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    match runtime.build() {
        Ok(runtime) => runtime.block_on(start(cli)),
        Err(e) => {
            eprintln!("rolegate: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start(cli: Cli) -> ExitCode {
    // A credential_process's stdout is read by the SDK: logs only ever go to stderr.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_default())
        .with_writer(std::io::stderr);
    match cli.log_format {
        rolegate::cli::LogFormat::Json => logs.json().flatten_event(true).init(),
        rolegate::cli::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    if let Command::Explain(args) = &cli.command {
        return match explain(args).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("rolegate: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rolegate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `rolegate explain`: load a snapshot, explain, print. `Ok(granted)`; an error is a usage or
/// config error.
async fn explain(args: &ExplainArgs) -> Result<bool, Box<dyn std::error::Error>> {
    let snapshot =
        match &args.config {
            Some(dir) => rolegate::store::files::load_dir(dir)?,
            None => {
                let client = rolegate::cluster::kube_client("explain")
                    .await
                    .map_err(|e| {
                        format!("no cluster to explain against (or give --config DIR): {e}")
                    })?;
                let index = rolegate::store::index::Index::start(&client, &args.operator_namespace);
                let wait = std::time::Duration::from_secs(args.timeout_seconds);
                tokio::time::timeout(wait, index.ready()).await.map_err(|_| {
                format!(
                    "the cluster's resources did not list within {}s: may this kubeconfig list \
                     SAMLApps, IAMProviders, RoleMappings, Connections, Namespaces, \
                     ServiceAccounts, and Secrets in namespace {:?}?",
                    args.timeout_seconds, args.operator_namespace
                )
            })?;
                index.snapshot()
            }
        };
    let connection = match (&args.user, &args.connection) {
        (Some(_), None) => rolegate::explain::default_connection(&snapshot)?,
        (_, c) => c.clone().unwrap_or_default(),
    };
    let subject = match (&args.namespace, &args.service_account, &args.user) {
        (Some(namespace), Some(name), _) => {
            rolegate::policy::Subject::ServiceAccount { namespace, name }
        }
        (_, _, Some(user)) => rolegate::policy::Subject::Person {
            connection: &connection,
            user,
            groups: &args.groups,
        },
        _ => return Err("give --namespace and --service-account, or --user".into()),
    };
    let query = rolegate::explain::Query {
        subject,
        role: args.role.as_deref(),
        ctx: rolegate::policy::RequestContext {
            pod: args.pod.as_deref(),
            pod_uid: None,
            cluster: args.cluster_name.as_deref(),
        },
    };
    let explanation = rolegate::explain::explain(&snapshot, &query);
    match args.output {
        ExplainOutput::Text => print!("{explanation}"),
        ExplainOutput::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
    }
    Ok(explanation.granted)
}

async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve(args) => rolegate::standalone::serve(args.options()).await?,
        Command::Server(args) => rolegate::cluster::serve(args.options()).await?,
        Command::Agent(args) => {
            rolegate::agent::run(args.options()).await?;
        }
        Command::Controller(args) => rolegate::controller::run::run(args.options()?).await?,
        Command::Credentials(args) => {
            let credentials = rolegate::laptop::credentials(args.options()).await?;
            println!("{}", serde_json::to_string(&credentials)?);
        }
        // `start` runs explain itself, for its exit statuses.
        Command::Explain(args) => {
            explain(&args).await?;
        }
        Command::Import(ImportCommand::Auth0Addon { file, name }) => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?
            };
            let imported = rolegate::auth0::import_addon(&text, &name)?;
            for note in &imported.notes {
                eprintln!("note: {note}");
            }
            print!("{}", imported.yaml);
        }
        Command::Crds { out: None } => print!("{}", rolegate::crd::render_yaml()?),
        Command::Crds { out: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            for (file, yaml) in rolegate::crd::render_files()? {
                std::fs::write(dir.join(file), yaml)?;
            }
        }
        Command::Dev(DevCommand::Token {
            key,
            issuer,
            subject,
            audiences,
            ttl,
            pod,
            kid,
            out,
        }) => {
            let pem = std::fs::read_to_string(key)?;
            let spec = rolegate::dev::TokenSpec {
                issuer,
                subject,
                audiences,
                ttl_seconds: ttl,
                pod,
                kid,
            };
            let token = rolegate::dev::token(&pem, &spec, jiff::Timestamp::now())?;
            // Token files carry no trailing newline, as the kubelet writes them; SDKs send the
            // file's bytes verbatim as a header value.
            match out {
                Some(path) => std::fs::write(path, token)?,
                None => println!("{token}"),
            }
        }
        Command::Dev(DevCommand::Jwks { key }) => {
            let pem = std::fs::read_to_string(key)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&rolegate::dev::jwks(&pem)?)?
            );
        }
        Command::Dev(DevCommand::Keygen) => print!("{}", rolegate::dev::generate_key()?),
    }
    Ok(())
}
