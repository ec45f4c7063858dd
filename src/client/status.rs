//! `tranche status ID`: where an upload stands, for a person or (`--json`)
//! as the server's upload object.

use indicatif::HumanBytes;

use super::api::Api;
use super::{describe, ClientError};
use crate::cli::StatusArgs;
use crate::wire::UploadView;

/// A few lines a person reads at a glance.
pub fn render(view: &UploadView, api: &Api) -> String {
    let mut out = format!(
        "upload    {}\nfile      {} ({}, {})\nstatus    {}\nchunks    {} of {} received ({} of {}), chunk size {}\n",
        view.id,
        view.filename,
        HumanBytes(view.size),
        view.content_type,
        serde_json::to_value(view.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        view.received_chunks,
        view.chunk_count,
        HumanBytes(view.bytes_received),
        HumanBytes(view.size),
        HumanBytes(view.chunk_size),
    );
    if !view.missing_chunks.is_empty() && view.missing_chunks.len() as u64 != view.chunk_count {
        out += &format!("missing   {}\n", ranges(&view.missing_chunks));
    }
    out += &format!("created   {}\n", view.created_at);
    if let Some(file) = &view.file {
        let url = api
            .url(&file.url)
            .map_or_else(|_| file.url.clone(), |u| u.to_string());
        out += &format!("url       {url}\nsha256    {}\n", file.sha256);
    } else {
        out += &format!("expires   {}\n", view.expires_at);
    }
    if let Some(failure) = &view.error {
        out += &format!("error     {}: {}\n", failure.error, failure.message);
    }
    out
}

/// `0-3, 7, 9-12`: the missing chunks of a big upload in a line.
fn ranges(indexes: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last = iter.next().unwrap_or(last);
        }
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    parts.join(", ")
}

pub async fn run(args: StatusArgs) -> u8 {
    let work = async {
        let api = Api::for_client(&args.client)?;
        let on_retry = |e: &ClientError, d: std::time::Duration| {
            if !args.client.quiet {
                eprintln!(
                    "tranche: {}; retrying in {:.1}s",
                    describe(e),
                    d.as_secs_f64()
                );
            }
        };
        let view = api.get_upload(&args.id, None, &on_retry).await?;
        Ok::<_, ClientError>((view, api))
    };
    match super::until_interrupted(work).await {
        Ok((view, api)) => {
            if args.client.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&view).unwrap_or_default()
                );
            } else {
                print!("{}", render(&view, &api));
            }
            0
        }
        Err(e) => super::fail(&args.client, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::ranges;

    #[test]
    fn missing_chunks_read_as_ranges() {
        assert_eq!(ranges(&[0, 1, 2, 3, 7, 9, 10]), "0-3, 7, 9-10");
        assert_eq!(ranges(&[5]), "5");
        assert_eq!(ranges(&[]), "");
    }
}
