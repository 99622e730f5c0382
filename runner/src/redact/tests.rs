use super::{MASK, Redactor};

fn redact_command(command: &str) -> String {
    Redactor::default().command(command)
}

/// Redacts `input`, checks the result is `expected`, and that redacting
/// again changes nothing.
fn check(input: &str, expected: &str) {
    let once = redact_command(input);
    assert_eq!(once, expected, "redacting {input:?}");
    assert_eq!(redact_command(&once), once, "not idempotent on {input:?}");
}

/// Commands that carry no secret come back byte for byte.
fn keeps(input: &str) {
    check(input, input);
}

#[test]
fn named_secret_options_with_a_separate_value() {
    check("app --token abc serve", "app --token *** serve");
    check("app --password hunter2", "app --password ***");
    check("app --passwd hunter2 -v", "app --passwd *** -v");
    check("app --secret s3 x", "app --secret *** x");
    check("app --api-key k1", "app --api-key ***");
    check("app --apikey k1", "app --apikey ***");
    check("app --auth user:pw", "app --auth ***");
    check(
        "ngrok http 80 --authtoken 2abc",
        "ngrok http 80 --authtoken ***",
    );
    check("go-app -token abc", "go-app -token ***");
}

#[test]
fn named_secret_options_with_equals() {
    check("app --token=abc serve", "app --token=*** serve");
    check("app --password=a=b", "app --password=***");
    check("app --api-key=", "app --api-key=***");
    check(
        "java -Ddb.password=pw -jar x.jar",
        "java -Ddb.password=*** -jar x.jar",
    );
}

#[test]
fn jupyter_style_dotted_and_camel_case_options() {
    check(
        "python3 -m jupyter lab --IdentityProvider.token=abc --port 8888",
        "python3 -m jupyter lab --IdentityProvider.token=*** --port 8888",
    );
    check(
        "jupyter notebook --NotebookApp.token=abc --NotebookApp.password=sha1:x",
        "jupyter notebook --NotebookApp.token=*** --NotebookApp.password=***",
    );
    check("app --accessToken abc", "app --accessToken ***");
    check("app --client_secret abc", "app --client_secret ***");
    check("app --aws-secrets a,b", "app --aws-secrets ***");
    check("app --ssh-key-file ~/.ssh/id", "app --ssh-key-file ***");
}

#[test]
fn options_that_only_look_like_secrets_stay() {
    keeps("python train.py --tokenizer-path /m/tok.json --max-tokens-per-batch 8");
    keeps("app --keyboard us --author me --keep-alive 5 --monkey 1");
    keeps("app --no-auth serve");
    keeps("app --no-password-prompt x");
    keeps("vite --port 5173 --host 0.0.0.0");
    // A single letter after one dash is never a secret option: `-p` is a
    // port as often as a password, `-k` is insecure for curl.
    keeps("server -p 8080 -k -t 4");
    keeps("node -e 'x' -1 --");
}

#[test]
fn the_value_of_a_bare_secret_option_is_the_next_word_unless_an_option() {
    check("app --token --verbose", "app --token --verbose");
    check("app --token -abc", "app --token ***");
    check("app --token", "app --token");
    check("app --token  x", "app --token  x");
}

#[test]
fn environment_style_pairs() {
    check("env API_KEY=abc node x", "env API_KEY=*** node x");
    check("env GITHUB_TOKEN=ghp_1 x", "env GITHUB_TOKEN=*** x");
    check("env PGPASSWORD=pw psql", "env PGPASSWORD=*** psql");
    check("x aws_secret_access_key=zz", "x aws_secret_access_key=***");
    check("x token=abc", "x token=***");
    check(
        "app --env=OPENAI_API_KEY=sk-1",
        "app --env=OPENAI_API_KEY=***",
    );
    keeps("env NODE_ENV=production PORT=3000 HOST=0.0.0.0 node x");
    keeps("make CC=gcc -j4");
}

#[test]
fn url_userinfo() {
    check(
        "app --db postgres://user:pw@db:5432/x",
        "app --db postgres://***@db:5432/x",
    );
    check(
        "git clone https://ghp_abc@github.com/o/r",
        "git clone https://***@github.com/o/r",
    );
    check(
        "app --url=https://u:p@h/a DATABASE_URL=mysql://r:s@h/d",
        "app --url=https://***@h/a DATABASE_URL=mysql://***@h/d",
    );
    check(
        "x https://a:b@h1/p,https://c:d@h2",
        "x https://***@h1/p,https://***@h2",
    );
    keeps("app https://example.com/a@b http://h:8080/x?page=2 mailto:me@x.org");
}

#[test]
fn secret_query_parameters() {
    check(
        "app https://h/x?token=abc&page=2",
        "app https://h/x?token=***&page=2",
    );
    check(
        "app http://h/?access_token=a&key=b&secret=c&password=d#frag",
        "app http://h/?access_token=***&key=***&secret=***&password=***#frag",
    );
    check(
        "open localhost:8888/lab?token=abc",
        "open localhost:8888/lab?token=***",
    );
    check(
        "app --url=https://u:p@h/?api_key=k",
        "app --url=https://***@h/?api_key=***",
    );
    keeps("app https://h/x?page=2&q=tokenizer&monkeys=3#key=x");
}

#[test]
fn everything_else_is_kept_byte_for_byte() {
    keeps("");
    keeps("  leading and  double  spaces ");
    keeps("node /x/node_modules/.bin/vite --port=5173 é ünïcode");
    check("  --token  a b", "  --token  a b");
    check(" --token a  ", " --token ***  ");
}

#[test]
fn the_mask_redacts_to_itself() {
    check(MASK, MASK);
    check("--token ***", "--token ***");
    check("https://***@h/?token=***", "https://***@h/?token=***");
}

#[test]
fn configured_names_are_redacted_besides_the_built_in_rules() {
    let extra = Redactor::new(&[
        "--my-flag".to_owned(),
        "-Shh".to_owned(),
        "MY_VAR".to_owned(),
        "sig".to_owned(),
    ]);
    assert_eq!(
        extra.command("srv --my-flag abc --My-Flag=def -shh x --other y"),
        "srv --my-flag *** --My-Flag=*** -shh *** --other y"
    );
    assert_eq!(
        extra.command("env MY_VAR=1 my_var=2 MY_VARIANT=3 srv http://h/?sig=abc&page=2"),
        "env MY_VAR=*** my_var=*** MY_VARIANT=3 srv http://h/?sig=***&page=2"
    );
    // The built-in rules still apply; a name alone is not an option.
    assert_eq!(
        extra.command("srv --token t --sig s API_KEY=k"),
        "srv --token *** --sig s API_KEY=***"
    );
    assert_eq!(
        Redactor::default().command("srv --my-flag abc"),
        "srv --my-flag abc"
    );
}
