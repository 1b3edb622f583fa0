// Runs the l2l command line in process against a scratch workspace of tiny models, data files and a checkpoint.
using System.Security.Cryptography;
using L2L.Backends;
using L2L.Model;
using L2L.Model.Data;
using L2L.TestSupport;
using Xunit;

namespace L2L.Cli.Tests;

/// <summary>What one in-process run of the command line produced.</summary>
internal sealed record CliResult(int ExitCode, string Out, string Error, int BackendRequests)
{
    public string[] ErrorLines => Error.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}

/// <summary>
/// A scratch directory holding: <c>tiny.json</c> (a 2-layer GPT-2 of 16 channels), <c>data.bin</c>
/// (valid llm.c tokens), <c>text.txt</c> (bytes), <c>short.bin</c> (3 tokens), <c>badmagic.bin</c>,
/// <c>ck/</c> (a checkpoint after 2 steps, with training state), <c>metrics.jsonl</c> (that run's
/// log), <c>somefile</c>, <c>notckpt/</c> (a directory with a file) and <c>emptydir/</c>.
/// </summary>
internal sealed class Workspace : IDisposable
{
    /// <summary>The settings the template checkpoint was trained with.</summary>
    public const string TrainArgs = "--config @/tiny.json --steps 2 --batch 2 --micro-batches 1 --seq 4 --lr 0.01 --seed 5 --shuffle --device cpu";

    private static readonly object Gate = new();
    private static string? _template;

    private Workspace(string path) => Path = path;

    public string Path { get; }

    public string this[string name] => System.IO.Path.Combine(Path, name);

    /// <summary>A fresh copy of the template workspace (built once per test run on <paramref name="fixture"/>'s CPU backend).</summary>
    public static Workspace Create(BackendFixture fixture)
    {
        var template = Template(fixture);
        var dir = NewDirectory();
        CopyDirectory(template, dir);
        return new Workspace(dir);
    }

    private static string Template(BackendFixture fixture)
    {
        lock (Gate)
        {
            if (_template is not null) return _template;
            var ws = new Workspace(NewDirectory());
            File.WriteAllText(ws["tiny.json"], """{"vocab_size": 256, "n_positions": 16, "n_embd": 16, "n_layer": 2, "n_head": 2, "layer_norm_epsilon": 1e-5}""");
            TokenData.WriteBin(ws["data.bin"], Enumerable.Range(0, 200).Select(i => (ushort)(i * 7 % 256)).ToArray());
            TokenData.WriteBin(ws["short.bin"], new ushort[] { 1, 2, 3 });
            File.WriteAllBytes(ws["text.txt"], Enumerable.Range(0, 300).Select(i => (byte)('a' + i % 26)).ToArray());
            File.WriteAllBytes(ws["badmagic.bin"], Enumerable.Range(0, 1500).Select(i => (byte)(i * 31 % 251)).ToArray());
            File.WriteAllText(ws["somefile"], "not a checkpoint\n");
            Directory.CreateDirectory(ws["notckpt"]);
            File.WriteAllText(System.IO.Path.Combine(ws["notckpt"], "notes.txt"), "keep me\n");
            Directory.CreateDirectory(ws["emptydir"]);
            var result = ws.Run(fixture, $"train {TrainArgs} --save @/ck --log @/metrics.jsonl");
            Assert.True(result.ExitCode == 0, result.Error);
            _template = ws.Path;
            return _template;
        }
    }

    /// <summary>Runs the command line: words split on spaces, <c>@/</c> standing for the workspace directory.</summary>
    public CliResult Run(BackendFixture fixture, string commandLine) => Run(fixture, Words(commandLine));

    /// <summary>Runs <paramref name="args"/> on the fixture's CPU backend; cancelling the test stops training gracefully.</summary>
    public CliResult Run(BackendFixture fixture, string[] args) => Run(fixture, args, Environment.GetEnvironmentVariable);

    /// <summary>As above, with the environment variables the command reads given by <paramref name="variables"/> (e.g. a launcher's).</summary>
    public CliResult Run(BackendFixture fixture, string[] args, Func<string, string?> variables)
    {
        var env = new CliEnvironment { Backend = fixture.Get(DeviceKind.Cpu), Stop = TestContext.Current.CancellationToken, Variables = variables };
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        var code = Cli.Run(args, stdout, stderr, env);
        return new CliResult(code, stdout.ToString(), stderr.ToString(), env.BackendRequests);
    }

    public string[] Words(string commandLine) =>
        commandLine.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(w => w.Replace("@/", Path + "/", StringComparison.Ordinal)).ToArray();

    /// <summary>Every file and directory under the workspace with a hash of its bytes.</summary>
    public SortedDictionary<string, string> Snapshot()
    {
        var all = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var entry in Directory.EnumerateFileSystemEntries(Path, "*", SearchOption.AllDirectories))
        {
            var key = System.IO.Path.GetRelativePath(Path, entry);
            all[key] = !File.Exists(entry) ? "dir" : Hash(entry);
        }
        return all;
    }

    private static string Hash(string file)
    {
        try
        {
            return Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(file)));
        }
        catch (UnauthorizedAccessException)
        {
            return $"unreadable, {new FileInfo(file).Length} bytes";
        }
    }

    /// <summary>The step count recorded in a checkpoint's training state.</summary>
    public long CheckpointStep(string dir)
    {
        var config = GptConfig.Load(System.IO.Path.Combine(dir, Checkpoint.ConfigFile));
        return Checkpoint.LoadTrainingState(dir, new ModelLayout(config)).Step;
    }

    /// <summary>The "step" of every line of a metrics file.</summary>
    public static long[] LoggedSteps(string path) => File.ReadAllLines(path)
        .Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64()).ToArray();

    private static string NewDirectory()
    {
        var dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "l2l-cli-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from)) File.Copy(file, System.IO.Path.Combine(to, System.IO.Path.GetFileName(file)));
        foreach (var dir in Directory.GetDirectories(from)) CopyDirectory(dir, System.IO.Path.Combine(to, System.IO.Path.GetFileName(dir)));
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

/// <summary>The assertions every rejected command line must pass.</summary>
internal static class Rejected
{
    /// <summary>
    /// Exit code <paramref name="code"/>, exactly one <c>error:</c> line on stderr containing
    /// <paramref name="expected"/> and no stack trace, nothing on stdout, no backend asked for, and the
    /// workspace (checkpoint, metrics file, everything) unchanged byte for byte.
    /// </summary>
    public static void Check(CliResult result, int code, string expected, SortedDictionary<string, string> before, Workspace ws)
    {
        Assert.True(result.ExitCode == code, $"exit {result.ExitCode}, expected {code}; stderr: {result.Error}");
        var line = Assert.Single(result.ErrorLines);
        Assert.StartsWith("error: ", line);
        Assert.Contains(expected, line);
        Assert.DoesNotContain("   at ", result.Error);
        Assert.DoesNotContain("Exception", result.Error);
        Assert.Equal("", result.Out);
        Assert.Equal(0, result.BackendRequests);
        Assert.Equal(before, ws.Snapshot());
    }
}
