// A built-in training corpus whose best achievable loss is known exactly, for checking that training converges.
namespace L2L.Model.Data;

/// <summary>
/// Tokens from a first-order Markov chain over <see cref="ITokenSource.VocabSize"/> symbols. Every
/// row of the transition matrix holds the same K non-zero probabilities (in a row-specific order, on
/// row-specific successors chosen by a seeded generator), so the entropy rate, the loss a perfect
/// model reaches, is that row entropy exactly, whatever the stationary distribution.
/// </summary>
/// <remarks>
/// Each row includes the successor <c>(i + 1) mod V</c>, which makes the chain irreducible, so
/// every symbol keeps occurring. The whole sequence is generated up front, deterministically from
/// the seed.
/// </remarks>
public sealed class SyntheticCorpus : ITokenSource
{
    /// <summary>Non-zero transitions per row (fewer when the vocabulary is smaller).</summary>
    public const int MaxSuccessors = 8;

    private readonly int[] _tokens;
    private readonly double[] _probabilities;

    /// <summary>Generates <paramref name="length"/> tokens over <paramref name="vocabSize"/> symbols.</summary>
    public SyntheticCorpus(int vocabSize = 256, long length = 1 << 20, int seed = 1234)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 2);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, (long)Array.MaxLength);
        VocabSize = vocabSize;
        Length = length;
        Seed = seed;

        // Probabilities proportional to 1/(k+1): a spread of likely and unlikely successors.
        var k = Math.Min(MaxSuccessors, vocabSize);
        var weights = Enumerable.Range(0, k).Select(i => 1.0 / (i + 1)).ToArray();
        var total = weights.Sum();
        _probabilities = weights.Select(w => w / total).ToArray();
        EntropyRateNats = -_probabilities.Sum(p => p * Math.Log(p));

        var rng = new SplitMix64(SplitMix64.Mix((ulong)(uint)seed, 0x5EED_C0DE));
        var successors = new int[vocabSize * k];
        var candidates = new int[vocabSize];
        for (var row = 0; row < vocabSize; row++)
        {
            // The first k entries of a partial Fisher-Yates shuffle of the other symbols, with slot 0 forced to row+1.
            for (var j = 0; j < vocabSize; j++) candidates[j] = j;
            var next = (row + 1) % vocabSize;
            (candidates[0], candidates[next]) = (candidates[next], candidates[0]);
            for (var j = 1; j < k; j++)
            {
                var pick = j + rng.NextInt(vocabSize - j);
                (candidates[j], candidates[pick]) = (candidates[pick], candidates[j]);
            }
            // Shuffle which probability each successor gets, so the forced one is not always the likeliest.
            var rowSuccessors = successors.AsSpan(row * k, k);
            candidates.AsSpan(0, k).CopyTo(rowSuccessors);
            for (var j = k - 1; j > 0; j--)
            {
                var pick = rng.NextInt(j + 1);
                (rowSuccessors[j], rowSuccessors[pick]) = (rowSuccessors[pick], rowSuccessors[j]);
            }
        }

        var cumulative = new double[k];
        double running = 0;
        for (var j = 0; j < k; j++) cumulative[j] = running += _probabilities[j];
        cumulative[k - 1] = 1.0;

        _tokens = new int[length];
        var state = rng.NextInt(vocabSize);
        for (long t = 0; t < length; t++)
        {
            _tokens[t] = state;
            var u = rng.NextDouble();
            var slot = 0;
            while (u >= cumulative[slot]) slot++;
            state = successors[state * k + slot];
        }
        Successors = k;
    }

    /// <inheritdoc/>
    public int VocabSize { get; }

    /// <inheritdoc/>
    public long Length { get; }

    /// <summary>The seed the corpus was generated from.</summary>
    public int Seed { get; }

    /// <summary>Non-zero transitions per row, K.</summary>
    public int Successors { get; }

    /// <summary>The entropy rate in nats per token: the lowest expected cross-entropy any model can reach (exact).</summary>
    public double EntropyRateNats { get; }

    /// <summary>The K non-zero transition probabilities shared by every row, largest first.</summary>
    public IReadOnlyList<double> RowProbabilities => _probabilities;

    /// <inheritdoc/>
    public string Description =>
        $"synthetic Markov corpus (vocabulary {VocabSize}, {Successors} successors per symbol, seed {Seed}, {Length} tokens, entropy rate {EntropyRateNats:F4} nats/token)";

    /// <inheritdoc/>
    public void Read(long start, Span<int> destination)
    {
        var position = (int)(((start % Length) + Length) % Length);
        while (destination.Length > 0)
        {
            var n = (int)Math.Min(destination.Length, Length - position);
            _tokens.AsSpan(position, n).CopyTo(destination);
            destination = destination[n..];
            position = 0;
        }
    }

    /// <inheritdoc/>
    public override string ToString() => Description;
}
