// Small helpers shared by the commands: enum parsing, data selection, checkpoint tidying, the loss plot.
using System.CommandLine;
using L2L.Cli.Validation;
using L2L.Model;
using L2L.Model.Data;
using L2L.Training;

namespace L2L.Cli;

internal static class Enums
{
    /// <summary>Parses a kebab/lower-case option value into <typeparamref name="T"/>, with the accepted values in the error.</summary>
    public static T Parse<T>(string text, string option) where T : struct, Enum
    {
        if (Enum.TryParse<T>(text.Replace("-", ""), ignoreCase: true, out var value) && Enum.IsDefined(value))
            return value;
        var names = string.Join(", ", Enum.GetNames<T>().Select(n => n.ToLowerInvariant()));
        throw new ArgumentException($"{option} '{text}' is not one of: {names}.");
    }
}

internal static class DataSources
{
    /// <summary>What --data expects, for messages.</summary>
    public const string Expected = "give a token file: an llm.c .bin file, or any other file read as bytes (or a .bin read as bytes with --data-format bytes)";

    /// <summary>The values --data-format takes.</summary>
    public static IReadOnlyList<string> FormatNames { get; } = ["auto", "llmc", "bytes"];

    /// <summary>The --data-format option.</summary>
    public static Option<string> FormatOption() => new("--data-format")
    {
        Description = "How to read --data: auto (a .bin must be an llm.c token file; other files are llm.c if they start with its magic, else bytes), llmc, or bytes.",
        DefaultValueFactory = _ => "auto",
    };

    /// <summary>
    /// The token source for --data (a file, or the built-in synthetic corpus when none is given),
    /// checked to hold at least one window of <paramref name="seqLen"/> + 1 tokens.
    /// </summary>
    public static ITokenSource Open(string? path, int vocabSize, string format, int seqLen)
    {
        if (path is null) return new SyntheticCorpus(Math.Min(256, vocabSize));
        var source = TokenData.Open(path, vocabSize, Enums.Parse<TokenFileFormat>(format, "--data-format"));
        if (source.Length < seqLen + 1L)
        {
            (source as IDisposable)?.Dispose();
            throw new CliException($"--data '{path}' holds {source.Length} tokens, fewer than one window of --seq {seqLen} + 1 = {seqLen + 1L} tokens. " +
                "Use a shorter --seq or a longer data file");
        }
        return source;
    }
}

internal static class Checkpoints
{
    /// <summary>Recovers or removes what an interrupted save left beside <paramref name="dir"/>, saying what it did.</summary>
    public static void Tidy(string? dir, CliEnvironment env)
    {
        if (dir is null) return;
        try
        {
            foreach (var line in Checkpoint.RecoverInterruptedSave(dir))
                env.Out.WriteLine($"note: {line}.");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            // An unusable path: the validation rules report it.
        }
    }
}

internal static class LossPlot
{
    /// <summary>Writes the loss curve (and the corpus's entropy floor when known) as a PNG.</summary>
    public static void Save(string path, IReadOnlyList<StepMetrics> metrics, double? floor)
    {
        var plot = new ScottPlot.Plot();
        var xs = metrics.Select(m => (double)m.Step).ToArray();
        var ys = metrics.Select(m => m.Loss).ToArray();
        var line = plot.Add.Scatter(xs, ys);
        line.LegendText = "training loss";
        line.MarkerSize = 0;
        var validated = metrics.Where(m => m.ValLoss is not null).ToArray();
        if (validated.Length > 0)
        {
            var val = plot.Add.Scatter(validated.Select(m => (double)m.Step).ToArray(), validated.Select(m => m.ValLoss!.Value).ToArray());
            val.LegendText = "validation loss";
            val.MarkerSize = 5;
        }
        if (floor is { } f)
        {
            var h = plot.Add.HorizontalLine(f);
            h.LegendText = $"entropy rate {f:F3}";
            h.LinePattern = ScottPlot.LinePattern.Dashed;
        }
        plot.Title("L2L training loss");
        plot.XLabel("step");
        plot.YLabel("loss (nats/token)");
        plot.ShowLegend();
        OutputFiles.EnsureParentDirectory(path);
        plot.SavePng(path, 900, 500);
    }
}

internal static class BenchOutput
{
    /// <summary>Prints a benchmark's JSON (when asked) and writes it to a file (when given).</summary>
    public static void Write(string json, bool print, string? file)
    {
        if (print) Console.WriteLine(json);
        if (file is null) return;
        OutputFiles.EnsureParentDirectory(file);
        File.WriteAllText(file, json + Environment.NewLine);
        if (!print) Console.WriteLine($"wrote {file}");
    }
}

internal static class OutputFiles
{
    /// <summary>Creates the directory an output file will be written into, if it does not exist.</summary>
    public static void EnsureParentDirectory(string path)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
    }
}
