//! The image commands: `images`, `tag`, `rmi`, `inspect`, `save`, `load`, `history` — the store's
//! image index through `docker`'s verbs and output shapes.

use std::path::Path;

use anyhow::{bail, Context};
use rbuild_cache::{ImageRecord, Store};
use rbuild_image::reference::Reference;

pub(crate) fn open(root: &Path) -> anyhow::Result<Store> {
    Store::open(root).with_context(|| format!("opening the image store {}", root.display()))
}

/// Finds an image by name (`app`, `app:1`, full reference) or by ID prefix (of the config digest).
pub(crate) fn find(store: &Store, what: &str) -> anyhow::Result<ImageRecord> {
    if let Ok(reference) = Reference::parse(what) {
        if let Some(r) = store.images().get(&reference.to_string())? {
            return Ok(r);
        }
    }
    let hex = what.strip_prefix("sha256:").unwrap_or(what);
    if hex.len() >= 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let matches: Vec<ImageRecord> = store
            .images()
            .list()?
            .into_iter()
            .filter(|r| r.config.hex().starts_with(hex))
            .collect();
        if let Some(first) = matches.first() {
            if matches.iter().all(|m| m.config == first.config) {
                return Ok(first.clone());
            }
            bail!("{what:?} matches more than one image");
        }
    }
    bail!("no such image: {what}")
}

fn short_id(r: &ImageRecord) -> String {
    r.config.hex().chars().take(12).collect()
}

pub(crate) fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}{}", units[i]).replace(".000", "")
    }
}

/// `rbuild images`.
pub fn images(root: &Path) -> anyhow::Result<()> {
    let store = open(root)?;
    let mut records = store.images().list()?;
    records.sort_by(|a, b| b.created.cmp(&a.created).then(a.name.cmp(&b.name)));
    println!(
        "{:<40} {:<20} {:<14} {:<32} SIZE",
        "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
    );
    for r in records {
        let (repo, tag) = match Reference::parse(&r.name) {
            Ok(reference) => (
                reference.familiar_name(),
                reference.tag().unwrap_or("<none>").to_string(),
            ),
            Err(_) => (r.name.clone(), "<none>".into()),
        };
        println!(
            "{repo:<40} {tag:<20} {:<14} {:<32} {}",
            short_id(&r),
            r.created.clone().unwrap_or_default(),
            human_size(r.size)
        );
    }
    Ok(())
}

/// `rbuild tag SOURCE TARGET`.
pub fn tag(root: &Path, source: &str, target: &str) -> anyhow::Result<()> {
    let store = open(root)?;
    let record = find(&store, source)?;
    let reference = Reference::parse(target).with_context(|| format!("invalid tag {target:?}"))?;
    rbuild_image::tag_image(&store, &reference.to_string(), &record.manifest)?;
    Ok(())
}

/// `rbuild rmi IMAGE…`: removes names (an ID removes every name of that image).
pub fn rmi(root: &Path, names: &[String]) -> anyhow::Result<()> {
    let store = open(root)?;
    for what in names {
        let record = find(&store, what)?;
        let by_name =
            Reference::parse(what).ok().map(|r| r.to_string()) == Some(record.name.clone());
        let targets: Vec<ImageRecord> = if by_name {
            vec![record.clone()]
        } else {
            store
                .images()
                .list()?
                .into_iter()
                .filter(|r| r.config == record.config)
                .collect()
        };
        for t in targets {
            store.images().remove(&t.name)?;
            println!(
                "Untagged: {}",
                Reference::parse(&t.name)
                    .map(|r| r.familiar())
                    .unwrap_or(t.name.clone())
            );
        }
    }
    Ok(())
}

/// `rbuild inspect IMAGE…`: a JSON array with `docker image inspect`'s fields.
pub fn inspect(root: &Path, names: &[String]) -> anyhow::Result<()> {
    let store = open(root)?;
    let mut out = Vec::new();
    for what in names {
        let record = find(&store, what)?;
        let config = rbuild_image::images::read_config(&store, &record.config)?;
        let tags: Vec<String> = store
            .images()
            .list()?
            .into_iter()
            .filter(|r| r.config == record.config)
            .filter_map(|r| Reference::parse(&r.name).ok().map(|x| x.familiar()))
            .collect();
        out.push(serde_json::json!({
            "Id": record.config.to_string(),
            "RepoTags": tags,
            "RepoDigests": [],
            "Created": config.created,
            "Author": config.author,
            "Config": config.config,
            "Architecture": config.architecture,
            "Variant": if config.variant.is_empty() { None } else { Some(config.variant.clone()) },
            "Os": config.os,
            "Size": record.size,
            "RootFS": { "Type": config.rootfs.kind, "Layers": config.rootfs.diff_ids },
            "Metadata": { "ManifestDigest": record.manifest.to_string(), "ManifestMediaType": record.media_type },
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `rbuild history IMAGE`.
pub fn history(root: &Path, name: &str) -> anyhow::Result<()> {
    let store = open(root)?;
    let record = find(&store, name)?;
    let config = rbuild_image::images::read_config(&store, &record.config)?;
    println!(
        "{:<32} {:<60} {:<8} COMMENT",
        "CREATED", "CREATED BY", "LAYER"
    );
    for h in config.history.iter().rev() {
        let created_by: String = h.created_by.chars().take(60).collect();
        println!(
            "{:<32} {created_by:<60} {:<8} {}",
            h.created.clone().unwrap_or_default(),
            if h.empty_layer { "empty" } else { "layer" },
            h.comment
        );
    }
    Ok(())
}

/// `rbuild save -o FILE IMAGE…` (docker-archive, loadable by `docker load`).
pub fn save(root: &Path, output: &Path, names: &[String]) -> anyhow::Result<()> {
    let store = open(root)?;
    let mut images = Vec::new();
    for what in names {
        let record = find(&store, what)?;
        let name = Reference::parse(what)
            .ok()
            .filter(|r| r.to_string() == record.name)
            .map(|r| r.to_string())
            .unwrap_or_default();
        images.push((name, record.manifest));
    }
    let file =
        std::fs::File::create(output).with_context(|| format!("creating {}", output.display()))?;
    let mut w = std::io::BufWriter::new(file);
    rbuild_image::export_docker_archive(&store, &images, &mut w)?;
    std::io::Write::flush(&mut w).with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

/// `rbuild load -i FILE` (docker-archive or OCI archive).
pub fn load(root: &Path, input: &Path) -> anyhow::Result<()> {
    let store = open(root)?;
    let imported = rbuild_image::import_archive(&store, input)
        .with_context(|| format!("loading {}", input.display()))?;
    for image in imported {
        match image.name {
            Some(n) => println!(
                "Loaded image: {}",
                Reference::parse(&n).map(|r| r.familiar()).unwrap_or(n)
            ),
            None => println!("Loaded image ID: {}", image.config),
        }
    }
    Ok(())
}
