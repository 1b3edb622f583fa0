// Small helpers shared by the commands: enum parsing, data selection, error reporting, the loss plot.
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
    /// <summary>The token source for --data: a file, or the built-in synthetic corpus when none is given.</summary>
    public static ITokenSource Open(string? path, int vocabSize) =>
        path is null ? new SyntheticCorpus(Math.Min(256, vocabSize)) : TokenData.Open(path, vocabSize);
}

internal static class CliErrors
{
    /// <summary>Runs a command body, turning expected failures into one clear message and exit code 1.</summary>
    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or FileNotFoundException or DirectoryNotFoundException
                                   or L2L.Backends.DeviceNotFoundException or L2L.Backends.DeviceOutOfMemoryException
                                   or NonFiniteLossException or NotSupportedException or IOException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
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
