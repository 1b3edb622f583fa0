// The one JSON style every benchmark report is written in: snake_case names, indented.
using System.Text.Json;

namespace L2L.Training.Benchmarks;

/// <summary>Serialises benchmark reports with snake_case property names, indented.</summary>
public static class BenchmarkJson
{
    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
    };

    /// <summary>The report as JSON.</summary>
    public static string Serialize<T>(T report) => JsonSerializer.Serialize(report, Options);
}
