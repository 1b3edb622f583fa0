// The generation loop: prompt in, new tokens out, through a Gpt2Decoder and a TokenSampler.
using System.Diagnostics;

namespace L2L.Model.Gpt2;

/// <summary>What <see cref="Generation.Run"/> produced.</summary>
/// <param name="Ids">The generated tokens, without the prompt.</param>
/// <param name="PromptSeconds">Time to run the prompt (prefill).</param>
/// <param name="GenerateSeconds">Time to produce the tokens after the prompt.</param>
public sealed record GenerationResult(IReadOnlyList<int> Ids, double PromptSeconds, double GenerateSeconds)
{
    /// <summary>Generated tokens per second after the prompt.</summary>
    public double TokensPerSecond => GenerateSeconds > 0 ? Ids.Count / GenerateSeconds : 0;
}

/// <summary>Autoregressive generation.</summary>
public static class Generation
{
    /// <summary>
    /// Throws <see cref="ArgumentException"/> unless a prompt of <paramref name="promptTokens"/> and
    /// <paramref name="maxNewTokens"/> new tokens fit the model's <paramref name="maxPositions"/> (no sliding window).
    /// </summary>
    public static void CheckLength(int promptTokens, int maxNewTokens, int maxPositions)
    {
        if (promptTokens < 1) throw new ArgumentException("The prompt is empty; give at least one token.");
        if (maxNewTokens < 1) throw new ArgumentException($"--max-new-tokens must be at least 1, got {maxNewTokens}.");
        if ((long)promptTokens + maxNewTokens > maxPositions)
            throw new ArgumentException(
                $"The prompt ({promptTokens} tokens) plus --max-new-tokens {maxNewTokens} is {(long)promptTokens + maxNewTokens} positions, more than the model's n_positions ({maxPositions}); " +
                $"ask for at most {Math.Max(0, maxPositions - promptTokens)} new tokens or shorten the prompt.");
    }

    /// <summary>
    /// Generates <paramref name="maxNewTokens"/> tokens after <paramref name="prompt"/>. With <paramref name="useCache"/>
    /// each new token runs one position through the key/value cache; without it the whole prefix is recomputed for
    /// every token (the reference the cache must agree with).
    /// </summary>
    public static GenerationResult Run(Gpt2Decoder decoder, IReadOnlyList<int> prompt, int maxNewTokens, SamplingOptions sampling, bool useCache = true)
    {
        ArgumentNullException.ThrowIfNull(decoder);
        ArgumentNullException.ThrowIfNull(prompt);
        CheckLength(prompt.Count, maxNewTokens, decoder.MaxTokens);
        var sampler = new TokenSampler(sampling);
        var sequence = new List<int>(prompt);
        var clock = Stopwatch.StartNew();
        var logits = decoder.Prefill(sequence.ToArray());
        var promptSeconds = clock.Elapsed.TotalSeconds;
        clock.Restart();
        var generated = new List<int>(maxNewTokens);
        for (var i = 0; i < maxNewTokens; i++)
        {
            var next = sampler.Next(logits);
            generated.Add(next);
            sequence.Add(next);
            if (i + 1 == maxNewTokens) break;
            logits = useCache ? decoder.Step(next) : decoder.Prefill(sequence.ToArray());
        }
        return new GenerationResult(generated, promptSeconds, clock.Elapsed.TotalSeconds);
    }
}
