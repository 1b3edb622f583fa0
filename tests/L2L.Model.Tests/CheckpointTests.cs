// Checkpoint save/load: round trips, Hugging Face files, validation errors, and atomic replacement.
using System.Collections;
using Xunit;

namespace L2L.Model.Tests;

public class CheckpointTests
{
    private static readonly GptConfig Config = new(VocabSize: 50, MaxPositions: 16, Channels: 8, Layers: 2, Heads: 2);

    private static float[][] RandomLayers(ModelLayout layout, int seed)
    {
        var rng = new Random(seed);
        return layout.Layers.Select(l => Enumerable.Range(0, (int)l.Length).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray()).ToArray();
    }

    private static Dictionary<string, byte[]> Snapshot(string dir) =>
        Directory.GetFiles(dir).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);

    [Fact]
    public void ModelRoundTripsWithHuggingFaceNames()
    {
        using var tmp = new TempDirectory();
        var dir = Path.Combine(tmp.Path, "ckpt");
        var layout = new ModelLayout(Config);
        var layers = RandomLayers(layout, 1);
        Checkpoint.Save(dir, layout, layers);

        Assert.Equal([Checkpoint.ConfigFile, Checkpoint.ModelFile], Directory.GetFiles(dir).Select(Path.GetFileName).Order());
        Assert.False(Checkpoint.HasTrainingState(dir));
        using (var file = SafeTensorsFile.Open(Path.Combine(dir, Checkpoint.ModelFile)))
        {
            Assert.Equal(layout.Layers.SelectMany(l => l.Tensors).Select(t => t.FullName).Order(), file.Tensors.Keys.Order());
            Assert.Equal([8L, 24L], file.Tensors["h.1.attn.c_attn.weight"].Shape);
            Assert.Equal([32L, 8L], file.Tensors["h.0.mlp.c_proj.weight"].Shape);
            Assert.Equal("pt", file.Metadata["format"]);
            var wpe = new float[16 * 8];
            file.ReadFloat32("wpe.weight", wpe);
            Assert.Equal(layers[0].AsSpan((int)layout.Embedding["wpe.weight"].Offset, wpe.Length).ToArray(), wpe);
        }

        var (config, loaded) = Checkpoint.Load(dir, expected: Config);
        Assert.Equal(Config, config);
        Assert.Equal(layers.Length, loaded.Length);
        for (var i = 0; i < layers.Length; i++) Assert.Equal(layers[i], loaded[i]);
        Assert.DoesNotContain(Directory.GetDirectories(tmp.Path), d => Path.GetFileName(d).StartsWith('.'));
    }

    [Fact]
    public void TrainingStateRoundTrips()
    {
        using var tmp = new TempDirectory();
        var layout = new ModelLayout(Config);
        var rng = new Random(3);
        var states = layout.Layers.Select(l => Enumerable.Range(0, (int)(2 * l.Length)).Select(_ => (float)rng.NextDouble()).ToArray()).ToArray();
        var state = new TrainingState(1234, "adamw", 2, states, new Dictionary<string, string> { ["lr_schedule"] = "cosine", ["data_position"] = "99" });
        Checkpoint.Save(tmp.Path, layout, RandomLayers(layout, 2), state);

        Assert.True(Checkpoint.HasTrainingState(tmp.Path));
        var loaded = Checkpoint.LoadTrainingState(tmp.Path, layout);
        Assert.Equal(1234, loaded.Step);
        Assert.Equal("adamw", loaded.Optimizer);
        Assert.Equal(2, loaded.StateFloatsPerParam);
        Assert.Equal("cosine", loaded.Metadata["lr_schedule"]);
        Assert.Equal("99", loaded.Metadata["data_position"]);
        for (var i = 0; i < states.Length; i++) Assert.Equal(states[i], loaded.LayerStates[i]);

        using var file = SafeTensorsFile.Open(Path.Combine(tmp.Path, Checkpoint.StateFile));
        Assert.Equal(["state.embedding", "state.h.0", "state.h.1", "state.head"], file.Tensors.Keys.Order());
        Assert.Equal("1234", file.Metadata["step"]);
        Assert.Equal("2", file.Metadata["state_floats"]);
    }

    [Fact]
    public void StatelessOptimizerSavesNoStateTensors()
    {
        using var tmp = new TempDirectory();
        var layout = new ModelLayout(Config);
        var state = new TrainingState(5, "sgd", 0, [], new Dictionary<string, string>());
        Checkpoint.Save(tmp.Path, layout, RandomLayers(layout, 2), state);
        var loaded = Checkpoint.LoadTrainingState(tmp.Path, layout);
        Assert.Equal(5, loaded.Step);
        Assert.Equal("sgd", loaded.Optimizer);
        Assert.All(loaded.LayerStates, s => Assert.Empty(s));
        Assert.Equal(layout.Layers.Count, loaded.LayerStates.Length);
    }

    [Fact]
    public void TrainingStateForAnotherModelIsRejected()
    {
        using var tmp = new TempDirectory();
        var layout = new ModelLayout(Config);
        var states = layout.Layers.Select(l => new float[2 * l.Length]).ToArray();
        Checkpoint.Save(tmp.Path, layout, RandomLayers(layout, 2), new TrainingState(1, "adamw", 2, states, new Dictionary<string, string>()));
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.LoadTrainingState(tmp.Path, new ModelLayout(Config.WithLayers(3))));
        Assert.Contains("missing tensor 'state.h.2'", e.Message);
        Assert.Contains(Checkpoint.StateFile, e.Message);
        e = Assert.Throws<InvalidDataException>(() => Checkpoint.LoadTrainingState(tmp.Path, new ModelLayout(Config with { Channels = 16 })));
        Assert.Contains("expected", e.Message);
    }

    [Fact]
    public void HuggingFaceStyleFileLoads()
    {
        // As exported from transformers' GPT2LMHeadModel: "transformer." prefixes, a tied lm_head, causal-mask buffers.
        using var tmp = new TempDirectory();
        var layout = new ModelLayout(Config);
        var layers = RandomLayers(layout, 4);
        var tensors = new List<(string, long[], ReadOnlyMemory<float>)>();
        foreach (var layer in layout.Layers)
        {
            foreach (var slot in layer.Tensors)
                tensors.Add(("transformer." + slot.FullName, slot.LongShape, layers[layer.Index].AsMemory((int)slot.Offset, (int)slot.Length)));
            if (layer.Kind == LayerKind.Block)
            {
                tensors.Add(($"transformer.{layer.Name}.attn.bias", [1L, 1L, 16L, 16L], new float[256]));
                tensors.Add(($"transformer.{layer.Name}.attn.masked_bias", [], new[] { -1e4f }));
            }
        }
        tensors.Add(("lm_head.weight", [50L, 8L], layers[0].AsMemory(0, 400)));
        SafeTensors.Write(Path.Combine(tmp.Path, Checkpoint.ModelFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(tmp.Path, Checkpoint.ConfigFile), """
            {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_ctx": 16, "vocab_size": 50,
             "n_positions": 16, "n_embd": 8, "n_layer": 2, "n_head": 2, "layer_norm_epsilon": 1e-05}
            """);

        var (config, loaded) = Checkpoint.Load(tmp.Path);
        Assert.Equal(Config, config);
        for (var i = 0; i < layers.Length; i++) Assert.Equal(layers[i], loaded[i]);
    }

    [Fact]
    public void MissingWrongShapeAndExtraTensorsAreAllListed()
    {
        using var tmp = new TempDirectory();
        var layout = new ModelLayout(Config);
        var layers = RandomLayers(layout, 5);
        var tensors = layout.Layers.SelectMany(l => l.Tensors.Select(t => (t.FullName, t.LongShape, (ReadOnlyMemory<float>)layers[l.Index].AsMemory((int)t.Offset, (int)t.Length))))
            .Where(t => t.FullName != "h.1.ln_2.bias")
            .Select(t => t.FullName == "h.0.attn.c_attn.weight" ? (t.FullName, new[] { 24L, 8L }, t.Item3) : t)
            .Append(("h.0.attn.extra", [2L], new float[2]))
            .ToList();
        SafeTensors.Write(Path.Combine(tmp.Path, Checkpoint.ModelFile), tensors);
        Config.Save(Path.Combine(tmp.Path, Checkpoint.ConfigFile));

        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(tmp.Path));
        Assert.Contains(Checkpoint.ModelFile, e.Message);
        Assert.Contains("missing 1 tensor(s): h.1.ln_2.bias", e.Message);
        Assert.Contains("'h.0.attn.c_attn.weight' has shape [24, 8], expected [8, 24]", e.Message);
        Assert.Contains("unexpected tensor 'h.0.attn.extra'", e.Message);
    }

    [Fact]
    public void CheckpointOfAnotherConfigIsRejected()
    {
        using var tmp = new TempDirectory();
        var layout = new ModelLayout(Config);
        Checkpoint.Save(tmp.Path, layout, RandomLayers(layout, 6));
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(tmp.Path, Config with { Layers = 4, VocabSize = 60 }));
        Assert.Contains("n_layer: 4 vs 2", e.Message);
        Assert.Contains("vocab_size: 60 vs 50", e.Message);
        Assert.DoesNotContain("n_embd", e.Message);
    }

    [Fact]
    public void ConfigThatDisagreesWithTheWeightsIsRejected()
    {
        using var tmp = new TempDirectory();
        var layout = new ModelLayout(Config);
        Checkpoint.Save(tmp.Path, layout, RandomLayers(layout, 6));
        (Config with { Channels = 12 }).Save(Path.Combine(tmp.Path, Checkpoint.ConfigFile));
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(tmp.Path));
        Assert.Contains("'wte.weight' has shape [50, 8], expected [50, 12]", e.Message);
    }

    [Fact]
    public void MissingFilesAreReported()
    {
        using var tmp = new TempDirectory();
        Assert.Throws<DirectoryNotFoundException>(() => Checkpoint.Load(Path.Combine(tmp.Path, "none")));
        Assert.Throws<FileNotFoundException>(() => Checkpoint.Load(tmp.Path));
        Config.Save(Path.Combine(tmp.Path, Checkpoint.ConfigFile));
        var e = Assert.Throws<FileNotFoundException>(() => Checkpoint.Load(tmp.Path));
        Assert.Contains(Checkpoint.ModelFile, e.Message);
    }

    [Fact]
    public void FailedSaveLeavesTheExistingCheckpointIntact()
    {
        using var tmp = new TempDirectory();
        var dir = Path.Combine(tmp.Path, "ckpt");
        var layout = new ModelLayout(Config);
        var state = new TrainingState(7, "adamw", 2, layout.Layers.Select(l => new float[2 * l.Length]).ToArray(), new Dictionary<string, string>());
        Checkpoint.Save(dir, layout, RandomLayers(layout, 7), state);
        var before = Snapshot(dir);

        // Fails after part of the new checkpoint has been written (as a full disk would).
        var failing = new FailingList(RandomLayers(layout, 8), allowedReads: layout.Layers.Count + 2);
        Assert.Throws<IOException>(() => Checkpoint.Save(dir, layout, failing));
        Assert.Equal(before.Keys.Order(), Snapshot(dir).Keys.Order());
        foreach (var (name, bytes) in Snapshot(dir)) Assert.Equal(before[name], bytes);

        // Rejected arguments fail before anything is written.
        Assert.Throws<ArgumentException>(() => Checkpoint.Save(dir, layout, RandomLayers(layout, 9).Take(2).ToArray()));
        Assert.Throws<ArgumentException>(() => Checkpoint.Save(dir, layout, RandomLayers(layout, 9), state with { LayerStates = [new float[1]] }));
        foreach (var (name, bytes) in Snapshot(dir)) Assert.Equal(before[name], bytes);

        // No staging directories are left behind, and the old checkpoint still loads.
        Assert.Equal(["ckpt"], Directory.GetDirectories(tmp.Path).Select(Path.GetFileName));
        Assert.Equal(7, Checkpoint.LoadTrainingState(dir, layout).Step);
        Checkpoint.Load(dir, Config);
    }

    [Fact]
    public void SaveReplacesAnOlderCheckpointCompletely()
    {
        using var tmp = new TempDirectory();
        var dir = Path.Combine(tmp.Path, "ckpt");
        var layout = new ModelLayout(Config);
        var state = new TrainingState(1, "adamw", 2, layout.Layers.Select(l => new float[2 * l.Length]).ToArray(), new Dictionary<string, string>());
        Checkpoint.Save(dir, layout, RandomLayers(layout, 1), state);
        var newer = RandomLayers(layout, 2);
        Checkpoint.Save(dir, layout, newer);
        Assert.False(Checkpoint.HasTrainingState(dir)); // the stale state from the older save must not survive
        Assert.Equal(newer[1], Checkpoint.Load(dir).Layers[1]);
        Assert.Equal(["ckpt"], Directory.GetDirectories(tmp.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void InterruptedSwapIsRecoveredOnLoad()
    {
        using var tmp = new TempDirectory();
        var dir = Path.Combine(tmp.Path, "ckpt");
        var layout = new ModelLayout(Config);
        var layers = RandomLayers(layout, 1);
        Checkpoint.Save(dir, layout, layers);
        // The state a crash between the two renames leaves behind: the old checkpoint aside, the new one staged.
        Directory.Move(dir, Path.Combine(tmp.Path, ".ckpt.old-0123"));
        Directory.CreateDirectory(Path.Combine(tmp.Path, ".ckpt.new-4567"));
        var notices = new List<string>();
        Assert.Equal(layers[1], Checkpoint.Load(dir, notice: notices.Add).Layers[1]);
        Assert.Equal(2, notices.Count);
        Assert.Contains(".ckpt.old-0123", notices[0]);
        Assert.Contains(".ckpt.new-4567", notices[1]);
        Assert.Equal(["ckpt"], Directory.GetDirectories(tmp.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void StaleSwapDirectoriesAreRemovedOnSave()
    {
        using var tmp = new TempDirectory();
        var dir = Path.Combine(tmp.Path, "ckpt");
        var layout = new ModelLayout(Config);
        Checkpoint.Save(dir, layout, RandomLayers(layout, 1));
        Directory.CreateDirectory(Path.Combine(tmp.Path, ".ckpt.old-89ab"));
        Directory.CreateDirectory(Path.Combine(tmp.Path, ".ckpt.new-cdef"));
        Directory.CreateDirectory(Path.Combine(tmp.Path, ".other.new-0000")); // another checkpoint's: not ours to touch
        var notices = new List<string>();
        Checkpoint.Save(dir, layout, RandomLayers(layout, 2), notice: notices.Add);
        Assert.Equal(2, notices.Count);
        Assert.Equal([".other.new-0000", "ckpt"], Directory.GetDirectories(tmp.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void AnUnrecoverableSwapIsExplainedOnLoad()
    {
        using var tmp = new TempDirectory();
        var dir = Path.Combine(tmp.Path, "ckpt");
        var layout = new ModelLayout(Config);
        Checkpoint.Save(dir, layout, RandomLayers(layout, 1));
        Directory.Move(dir, Path.Combine(tmp.Path, ".ckpt.old-0123"));
        File.WriteAllText(dir, "in the way"); // a file where the checkpoint should go blocks the rename back
        Assert.Contains(".ckpt.old-0123", Assert.ThrowsAny<IOException>(() => Checkpoint.Load(dir)).Message);
        Assert.True(Directory.Exists(Path.Combine(tmp.Path, ".ckpt.old-0123"))); // the only copy is kept
    }

    /// <summary>Layer arrays that fail with an I/O error after a number of reads.</summary>
    private sealed class FailingList(float[][] layers, int allowedReads) : IReadOnlyList<float[]>
    {
        private int _reads;

        public float[] this[int index] => ++_reads > allowedReads ? throw new IOException("No space left on device (simulated)") : layers[index];

        public int Count => layers.Length;

        public IEnumerator<float[]> GetEnumerator() => layers.AsEnumerable().GetEnumerator();

        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
    }
}
