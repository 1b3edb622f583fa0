// One table per kind of rule: every bad command line stops before training with one error line and leaves files untouched.
using L2L.TestSupport;
using Xunit;

namespace L2L.Cli.Tests;

public sealed class ValidationTests(BackendFixture fixture)
{
    /// <summary>A valid train command line; each row replaces or adds options (a word "!--x" removes --x).</summary>
    private const string Train = "train " + Workspace.TrainArgs + " --log @/metrics.jsonl";
    private const string Eval = "eval --checkpoint @/ck --batch 1 --seq 4 --batches 1 --device cpu";

    public static TheoryData<string, string, string> Ranges => new()
    {
        { Train, "--beta1 1.5", "--beta1 1.5 is out of range. Use a value in [0, 1)." },
        { Train, "--beta2 1", "--beta2 1 is out of range" },
        { Train, "--lr 0", "--lr 0 is out of range. Use a value greater than 0." },
        { Train, "--lr -1", "--lr -1 is out of range" },
        { Train, "--weight-decay -0.1", "--weight-decay -0.1 is out of range. Use a value of 0 or more." },
        { Train, "--eps -1", "--eps -1 is out of range" },
        { Train, "--steps 0", "--steps 0 is out of range. Use a value of at least 1." },
        { Train, "--batch 0", "--batch 0 is out of range" },
        { Train, "--micro-batches 0", "--micro-batches 0 is out of range" },
        { Train, "--batch 3 --micro-batches 2", "--batch 3 is not divisible by --micro-batches 2" },
        { Train, "--seq 0", "--seq 0 is out of range" },
        { Train, "--seq 17", "--seq 17 must be between 1 and the model's longest sequence (n_positions / max_position_embeddings = 16)" },
        { Train, "--warmup -1", "--warmup -1 is out of range" },
        { Train, "--optimizer-threads 0", "--optimizer-threads 0 is out of range. Use a value of at least 1." },
        { Train, "--device-budget -5", "--device-budget -5 is out of range. Use a value greater than 0." },
        { Train, "--device-budget 0", "--device-budget 0 is out of range" },
        { Train, "--clip-grad-norm 0", "--clip-grad-norm 0 is out of range. Use a value greater than 0." },
        { Train, "--layer-drop 1", "--layer-drop 1 is out of range. Use a value in [0, 1)." },
        { Train, "--val-data @/data.bin --val-every 0", "--val-every 0 is out of range. Use a value of at least 1." },
        { Train, "--val-data @/data.bin --val-batches 0", "--val-batches 0 is out of range" },
        { Train, "--save-every -1 --save @/new", "--save-every -1 is out of range" },
        { Train, "--stash-codec adaptive --stash-bits-budget 9", "--stash-bits-budget 9 is out of range: each stash level takes 2, 4 or 8 bits, so the average budget must be in [2, 8]" },
        { Train, "--stash-codec adaptive --stash-bits-budget 1.5", "--stash-bits-budget 1.5 is out of range" },
        { Train, "--stash-codec adaptive --stash-adapt-every 0", "--stash-adapt-every 0 is out of range. Use a value of at least 1." },
        { Eval, "--batches 0", "--batches 0 is out of range. Use a value of at least 1." },
        { Eval, "--batch 0", "--batch 0 is out of range" },
        { Eval, "--seq 17", "--seq 17 is longer than the checkpoint's n_positions (16)" },
    };

    public static TheoryData<string, string, string> Choices => new()
    {
        { Train, "!--config --model gpt3", "--model gpt3 is not a known model preset. Use one of: gpt2-tiny" },
        { Train, "--optimizer adam", "--optimizer adam is not a known optimizer. Use one of: sgd, adamw, lamb" },
        { Train, "--schedule linear", "--schedule linear is not a known schedule" },
        { Train, "--executor gpu", "--executor gpu is not a known executor" },
        { Train, "--stash disk", "--stash disk is not a known stash placement" },
        { Train, "--update-mode lazy", "--update-mode lazy is not a known update mode. Use one of: eager, deferred" },
        { Train, "--clip-grad-norm 1 --clip-mode all", "--clip-mode all is not a known clip mode. Use one of: global, layer" },
        { Train, "--loss-scale static", "--loss-scale static is not a loss scale. Use none, dynamic, or a positive number" },
        { Train, "--optimizer-state fp16", "--optimizer-state fp16 is not a known optimizer state precision. Use one of: fp32, bf16" },
        { Train, "--embedding-update gpu", "--embedding-update gpu is not a known embedding update location. Use one of: auto, device, host" },
        { Train, "--data @/data.bin --data-format text", "--data-format text is not a known data format. Use one of: auto, llmc, bytes" },
        { Eval, "--data-format text", "--data-format text is not a known data format" },
    };

    public static TheoryData<string, string, string> Combinations => new()
    {
        { Train, "--executor conventional --stash host", "--stash applies only to --executor relay" },
        { Train, "--executor conventional --stash-codec adaptive", "--stash-codec applies only to --executor relay" },
        { Train, "--stash-codec int8 --stash-bits-budget 3", "--stash-bits-budget applies only to --stash-codec adaptive" },
        { Train, "--stash-adapt-every 5", "--stash-adapt-every applies only to --stash-codec adaptive" },
        { Train, "--executor conventional --optimizer-threads 2", "--optimizer-threads applies only to --executor relay" },
        { Train, "--optimizer sgd --beta1 0.8", "--beta1 applies only to --optimizer adamw or lamb" },
        { Train, "--optimizer sgd --eps 1e-6", "--eps applies only to --optimizer adamw or lamb" },
        { Train, "--executor conventional --optimizer lamb", "--optimizer lamb runs on the host and needs --executor relay" },
        { Train, "--save-every 5", "--save-every needs --save" },
        { Train, "--executor conventional --embedding-update host", "--embedding-update applies only to --executor relay" },
        { Train, "--optimizer lamb --embedding-update device", "--embedding-update device needs an optimizer with a device kernel" },
        { Train, "--val-every 5", "--val-every needs --val-data" },
        { Train, "--clip-mode layer", "--clip-mode needs --clip-grad-norm" },
        { Train, "--executor conventional --update-mode deferred", "--update-mode applies only to --executor relay" },
        { Train, "--executor conventional --optimizer-state bf16", "--optimizer-state applies only to --executor relay" },
        { Train, "--val-batches 2", "--val-batches needs --val-data" },
        { Train, "--override lr", "--override needs --resume" },
        { Train, "!--config --init @/ck --resume @/ck", "--init and --resume cannot be used together" },
        { Train, "--model gpt2", "--model and --config cannot be used together" },
        { Train, "!--config --resume @/ck --override learning-rate", "--override 'learning-rate' is not a setting a checkpoint records. Use one of: batch, seq" },
    };

    public static TheoryData<string, string, string> Devices => new()
    {
        { Train, "--device bogus", "--device: 'bogus' is not a device. Use auto, cpu, cuda or opencl" },
        { Train, "--device cpu:-1", "--device: 'cpu:-1' has a bad device index" },
        { Train, "--device auto:1", "'auto' takes no index" },
        { Train, "--device env:L2L_DEVICE=bogus", "L2L_DEVICE: 'bogus' is not a device" },
        { Eval, "--device cuda:x", "--device: 'cuda:x' has a bad device index" },
        { Eval, "--device env:L2L_DEVICE=tpu", "L2L_DEVICE: 'tpu' is not a device" },
    };

    public static TheoryData<string, string, string> Paths => new()
    {
        { Train, "--data @/emptydir", "--data '@/emptydir' is a directory, not a file. Give a token file" },
        { Train, "--data @/missing.bin", "--data '@/missing.bin' does not exist. Give a token file" },
        { Train, "--config @/emptydir", "--config '@/emptydir' is a directory, not a file. Give the path of a config.json" },
        { Train, "--config @/missing.json", "--config '@/missing.json' does not exist" },
        { Train, "!--config --resume @/somefile", "--resume '@/somefile' is a file, not a directory. Give a checkpoint directory" },
        { Train, "!--config --resume @/nothing", "--resume '@/nothing' does not exist. Give a checkpoint directory" },
        { Train, "!--config --init @/somefile", "--init '@/somefile' is a file, not a directory" },
        { Train, "--save @/somefile", "--save '@/somefile' is a file, but a checkpoint is a directory" },
        { Train, "--save @/notckpt", "--save '@/notckpt' is a directory holding 1 entry but no checkpoint" },
        { Train, "--save @/somefile/ck", "'@/somefile' is a file, not a directory" },
        { Train, "--save /proc/l2l-test/ck", "--save '/proc/l2l-test/ck' cannot be created: nothing can be written in '/proc'" },
        { Train, "--log @/emptydir", "--log '@/emptydir' is a directory" },
        { Train, "--log @/somefile/m.jsonl", "'@/somefile' is a file, not a directory" },
        { Train, "--log /proc/l2l-test.jsonl", "--log '/proc/l2l-test.jsonl' cannot be created" },
        { Train, "--plot @/emptydir", "--plot '@/emptydir' is a directory" },
        { Train, "--plot @/loss.txt", "--plot '@/loss.txt' does not end in .png" },
        { Eval, "--checkpoint @/somefile", "--checkpoint '@/somefile' is a file, not a directory" },
        { Eval, "--data @/emptydir", "--data '@/emptydir' is a directory, not a file" },
    };

    public static TheoryData<string, string, string> Data => new()
    {
        { Train, "--data @/badmagic.bin", "is not an llm.c token file: its first int32 is" },
        { Train, "--data @/badmagic.bin --data-format llmc", "not the magic number 20240520" },
        { Train, "--data @/text.txt --data-format llmc", "is not an llm.c token file" },
        { Train, "--data @/short.bin", "holds 3 tokens, fewer than one window of --seq 4 + 1 = 5 tokens" },
        { Eval, "--data @/badmagic.bin", "pass --data-format bytes" },
        { Eval, "--data @/short.bin", "fewer than one window" },
    };

    public static TheoryData<string, string, string> Resume => new()
    {
        { Train, "!--config --resume @/ck --steps 4 --batch 4", "--batch 4 differs from the 2 that checkpoint '@/ck' recorded" },
        { Train, "!--config --resume @/ck --steps 4 --seq 8", "--seq 8 differs from the 4" },
        { Train, "!--config --resume @/ck --steps 4 --micro-batches 2", "--micro-batches 2 differs from the 1" },
        { Train, "!--config --resume @/ck --steps 4 --optimizer lamb", "--optimizer lamb differs from the adamw" },
        { Train, "!--config --resume @/ck --steps 4 --lr 0.003", "--lr 0.003 differs from the 0.01" },
        { Train, "!--config --resume @/ck --steps 4 --weight-decay 0.1", "--weight-decay 0.1 differs from the 0" },
        { Train, "!--config --resume @/ck --steps 4 --beta2 0.95", "--beta2 0.95 differs from the 0.999" },
        { Train, "!--config --resume @/ck --steps 4 --schedule cosine", "--schedule cosine differs from the constant" },
        { Train, "!--config --resume @/ck --steps 4 --warmup 2", "--warmup 2 differs from the 0" },
        { Train, "!--config --resume @/ck --steps 4 --seed 6", "--seed 6 differs from the 5" },
        { Train, "!--config --resume @/ck --steps 4 --executor conventional", "--executor conventional differs from the relay" },
        { Train, "!--config --resume @/ck --steps 4 --stash host", "--stash host differs from the device" },
        { Train, "!--config --resume @/ck --steps 4 --optimizer sgd --override optimizer", "holds adamw optimizer state, which --optimizer sgd cannot continue" },
        { Train, "!--config --resume @/ck --steps 4 --batch 4 --lr 0.1 --override lr", "--batch 4 differs" },
        { Train, "!--config --resume @/ck --steps 4 --model gpt2-tiny", "does not match the expected model" },
        { Train, "!--config --resume @/emptydir", "--resume '@/emptydir' has no config.json, so it is not a checkpoint" },
        { Train, "!--config --resume @/notckpt", "--resume '@/notckpt' has no config.json" },
        { Eval, "--checkpoint @/emptydir", "--checkpoint '@/emptydir' has no config.json" },
    };

    public static TheoryData<string, string, string> Bench => new()
    {
        { "bench bus --device cpu", "--mib 0", "--mib 0 is out of range" },
        { "bench train --device cpu", "--device gpu:x", "--device: 'gpu:x' has a bad device index" },
        { "bench train --device cpu", "--model gpt3", "--model gpt3 is not a known model preset" },
        { "bench gemm --device cpu", "--out @/emptydir", "--out '@/emptydir' is a directory" },
    };

    public static TheoryData<string, string, string> Usage => new()
    {
        { Train, "--steps abc", "Cannot parse argument 'abc' for option '--steps'" },
        { Train, "--bogus 1", "Unrecognized command or argument '--bogus'" },
        { "", "", "Required command was not provided. Run 'l2l --help' for the options." },
        { "bench bus", "--mib x", "Run 'l2l bench bus --help' for the options." },
    };

    [Theory, MemberData(nameof(Ranges))] public void RangeRules(string command, string change, string expected) => Check(command, change, expected);

    [Theory, MemberData(nameof(Choices))] public void ChoiceRules(string command, string change, string expected) => Check(command, change, expected);

    [Theory, MemberData(nameof(Combinations))] public void CombinationRules(string command, string change, string expected) => Check(command, change, expected);

    [Theory, MemberData(nameof(Devices))] public void DeviceRules(string command, string change, string expected) => Check(command, change, expected);

    [Theory, MemberData(nameof(Paths))] public void PathRules(string command, string change, string expected) => Check(command, change, expected);

    [Theory, MemberData(nameof(Data))] public void DataRules(string command, string change, string expected) => Check(command, change, expected);

    [Theory, MemberData(nameof(Resume))] public void ResumeRules(string command, string change, string expected) => Check(command, change, expected);

    [Theory, MemberData(nameof(Bench))] public void BenchRules(string command, string change, string expected) => Check(command, change, expected);

    [Theory, MemberData(nameof(Usage))] public void UsageErrorsExitTwo(string command, string change, string expected) => Check(command, change, expected, code: 2);

    [Fact]
    public void UnreadableDataIsFoundByOpeningIt()
    {
        if (OperatingSystem.IsWindows())
        {
            Assert.Skip("Unix file modes only.");
            return;
        }
        using var ws = Workspace.Create(fixture);
        File.SetUnixFileMode(ws["data.bin"], UnixFileMode.None);
        // Mode 000 stops any user but root; a write-only sysfs file stops root too. Whichever refuses to open is the case.
        var unreadable = new[] { ws["data.bin"], "/sys/bus/pci/rescan" }.FirstOrDefault(path =>
        {
            try
            {
                File.OpenRead(path).Dispose();
                return false;
            }
            catch (UnauthorizedAccessException)
            {
                return true;
            }
            catch (IOException)
            {
                return false;
            }
        });
        if (unreadable is null)
        {
            Assert.Skip("No file here refuses to open for this user.");
            return;
        }
        Check(Train, $"--data {unreadable}", $"--data '{unreadable}' cannot be read (permission denied)", ws: ws);
        File.SetUnixFileMode(ws["data.bin"], UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }

    private void Check(string command, string change, string expected, int code = 1, Workspace? ws = null)
    {
        using var owned = ws is null ? Workspace.Create(fixture) : null;
        ws ??= owned!;
        var (args, environment) = Merge(ws.Words(command), ws.Words(change));
        var before = ws.Snapshot();
        var saved = environment.ToDictionary(kv => kv.Key, kv => Environment.GetEnvironmentVariable(kv.Key));
        foreach (var (name, value) in environment) Environment.SetEnvironmentVariable(name, value);
        CliResult result;
        try
        {
            result = ws.Run(fixture, args);
        }
        finally
        {
            foreach (var (name, value) in saved) Environment.SetEnvironmentVariable(name, value);
        }
        Rejected.Check(result, code, expected.Replace("@/", ws.Path + "/", StringComparison.Ordinal), before, ws);
    }

    /// <summary>
    /// Applies a row's changes to a command line: "--x v" replaces or adds --x, "!--x" removes it, and
    /// "--device env:NAME=VALUE" removes --device and sets an environment variable instead.
    /// </summary>
    private static (string[] Args, Dictionary<string, string> Environment) Merge(string[] command, string[] change)
    {
        var head = command.TakeWhile(w => !w.StartsWith("--", StringComparison.Ordinal)).ToList();
        var options = Pairs(command.Skip(head.Count).ToArray());
        var environment = new Dictionary<string, string>();
        foreach (var (name, value) in Pairs(change))
        {
            if (name.StartsWith('!')) { options.RemoveAll(o => o.Name == name[1..]); continue; }
            if (name == "--device" && value is not null && value.StartsWith("env:", StringComparison.Ordinal))
            {
                options.RemoveAll(o => o.Name == name);
                var assignment = value[4..].Split('=', 2);
                environment[assignment[0]] = assignment[1];
                continue;
            }
            var at = options.FindIndex(o => o.Name == name && name != "--override");
            if (at >= 0) options[at] = (name, value);
            else options.Add((name, value));
        }
        var args = head.Concat(options.SelectMany(o => o.Value is null ? new[] { o.Name } : new[] { o.Name, o.Value })).ToArray();
        return (args, environment);
    }

    private static List<(string Name, string? Value)> Pairs(string[] words)
    {
        var pairs = new List<(string, string?)>();
        for (var i = 0; i < words.Length; i++)
        {
            var hasValue = i + 1 < words.Length && !words[i + 1].StartsWith("--", StringComparison.Ordinal) && !words[i + 1].StartsWith("!--", StringComparison.Ordinal)
                && !(words[i + 1].StartsWith('-') && !char.IsDigit(words[i + 1].ElementAtOrDefault(1)));
            pairs.Add((words[i], hasValue ? words[++i] : null));
        }
        return pairs;
    }
}
