// BERT layouts and checkpoints: Hugging Face BertForMaskedLM names and [out, in] shapes, prefix and tied-decoder variants, model-type mismatches.
using L2L.Model.Bert;
using Xunit;

namespace L2L.Model.Tests;

public class BertCheckpointTests
{
    private static readonly BertConfig Config = new(VocabSize: 30, HiddenSize: 8, Layers: 2, Heads: 2, IntermediateSize: 12,
        MaxPositions: 16, TypeVocabSize: 2, PadTokenId: 28, MaskTokenId: 29);

    private static readonly GptConfig Gpt = new(VocabSize: 50, MaxPositions: 16, Channels: 8, Layers: 2, Heads: 2);

    private static float[][] RandomLayers(ModelLayout layout, int seed)
    {
        var rng = new Random(seed);
        return layout.Layers.Select(l => Enumerable.Range(0, (int)l.Length).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray()).ToArray();
    }

    private static List<(string Name, long[] Shape, ReadOnlyMemory<float> Data)> Tensors(ModelLayout layout, float[][] layers) =>
        layout.Layers.SelectMany(l => l.Tensors.Select(t => (t.FullName, t.LongShape, (ReadOnlyMemory<float>)layers[l.Index].AsMemory((int)t.Offset, (int)t.Length)))).ToList();

    [Fact]
    public void LayoutHasHuggingFaceNamesAndLinearShapes()
    {
        var layout = new ModelLayout(Config);
        Assert.Equal(["embedding", "layer.0", "layer.1", "head"], layout.Layers.Select(l => l.Name));
        Assert.Equal(Config.ParameterCount, layout.TotalLength);
        Assert.True(layout.TryFind("bert.encoder.layer.1.intermediate.dense.weight", out var layer, out var slot));
        Assert.Equal(2, layer.Index);
        Assert.Equal([12, 8], slot.Shape); // [out, in]
        Assert.True(layout.TryFind("bert.encoder.layer.0.output.dense.weight", out _, out slot));
        Assert.Equal([8, 12], slot.Shape);
        Assert.True(layout.TryFind("cls.predictions.bias", out layer, out slot));
        Assert.Same(layout.Head, layer);
        Assert.Equal([30], slot.Shape);
        Assert.True(layout.TryFind("bert.embeddings.token_type_embeddings.weight", out layer, out _));
        Assert.Same(layout.Embedding, layer);
        Assert.False(layout.TryFind("cls.predictions.decoder.weight", out _, out _)); // tied to the word embedding
        // Query, key and value are adjacent, so they form one (3H, H) product and one 3H bias.
        var block = layout.Blocks[0];
        Assert.Equal(block["attention.self.query.weight"].Offset + 64, block["attention.self.key.weight"].Offset);
        Assert.Equal(block["attention.self.key.weight"].Offset + 64, block["attention.self.value.weight"].Offset);
        Assert.Equal(block["attention.self.value.weight"].Offset + 64, block["attention.self.query.bias"].Offset);
        Assert.Equal(block["attention.self.query.bias"].Offset + 16, block["attention.self.value.bias"].Offset);
        foreach (var name in new[] { "bert-tiny", "bert-base", "bert-large" })
            Assert.Equal(BertConfig.Preset(name).ParameterCount, new ModelLayout(BertConfig.Preset(name)).TotalLength);
    }

    [Fact]
    public void CheckpointRoundTripsWithHuggingFaceNames()
    {
        using var tmp = new TempDirectory();
        var layout = new ModelLayout(Config);
        var layers = RandomLayers(layout, 1);
        Checkpoint.Save(tmp.Path, layout, layers);
        using (var file = SafeTensorsFile.Open(tmp.File(Checkpoint.ModelFile)))
        {
            Assert.Equal(layout.Layers.SelectMany(l => l.Tensors).Select(t => t.FullName).Order(), file.Tensors.Keys.Order());
            Assert.Equal([12L, 8L], file.Tensors["bert.encoder.layer.0.intermediate.dense.weight"].Shape);
            Assert.Equal([8L, 8L], file.Tensors["bert.encoder.layer.1.attention.self.key.weight"].Shape);
            Assert.Equal([30L, 8L], file.Tensors["bert.embeddings.word_embeddings.weight"].Shape);
        }
        Assert.Contains("\"model_type\": \"bert\"", File.ReadAllText(tmp.File(Checkpoint.ConfigFile)));
        var (config, loaded) = Checkpoint.Load(tmp.Path, Config);
        Assert.Equal<IModelConfig>(Config, config);
        for (var i = 0; i < layers.Length; i++) Assert.Equal(layers[i], loaded[i]);
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void CheckpointLoadsWithOrWithoutPrefixAndDecoder(bool prefix, bool decoder)
    {
        using var tmp = new TempDirectory();
        var layout = new ModelLayout(Config);
        var layers = RandomLayers(layout, 2);
        var tensors = Tensors(layout, layers)
            .Select(t => (prefix ? t.Name : t.Name.StartsWith("bert.", StringComparison.Ordinal) ? t.Name["bert.".Length..] : t.Name, t.Shape, t.Data))
            .ToList();
        if (decoder)
        {
            var word = layout.Embedding["word_embeddings.weight"];
            tensors.Add(("cls.predictions.decoder.weight", word.LongShape, layers[0].AsMemory((int)word.Offset, (int)word.Length)));
            tensors.Add(("cls.predictions.decoder.bias", [30L], new float[30]));
            tensors.Add(((prefix ? "bert." : "") + "pooler.dense.weight", [8L, 8L], new float[64]));
        }
        SafeTensors.Write(tmp.File(Checkpoint.ModelFile), tensors);
        Config.Save(tmp.File(Checkpoint.ConfigFile));
        var (_, loaded) = Checkpoint.Load(tmp.Path);
        for (var i = 0; i < layers.Length; i++) Assert.Equal(layers[i], loaded[i]);
    }

    [Fact]
    public void GptCheckpointWithBertConfigIsAClearError()
    {
        using var tmp = new TempDirectory();
        var layout = new ModelLayout(Gpt);
        Checkpoint.Save(tmp.Path, layout, RandomLayers(layout, 3));
        Config.Save(tmp.File(Checkpoint.ConfigFile));
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(tmp.Path));
        Assert.Contains("holds GPT-2 tensors", e.Message);
        Assert.Contains("\"model_type\": \"bert\"", e.Message);
    }

    [Fact]
    public void BertCheckpointWithGptConfigIsAClearError()
    {
        using var tmp = new TempDirectory();
        var layout = new ModelLayout(Config);
        Checkpoint.Save(tmp.Path, layout, RandomLayers(layout, 4));
        Gpt.Save(tmp.File(Checkpoint.ConfigFile));
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(tmp.Path));
        Assert.Contains("holds BERT tensors", e.Message);
        Assert.Contains("\"model_type\": \"gpt2\"", e.Message);
    }

    [Fact]
    public void AskingForTheOtherModelTypeIsAClearError()
    {
        using var tmp = new TempDirectory();
        var layout = new ModelLayout(Gpt);
        Checkpoint.Save(tmp.Path, layout, RandomLayers(layout, 5));
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(tmp.Path, Config));
        Assert.Contains("holds a gpt2 model", e.Message);
        Assert.Contains("a bert model was asked for", e.Message);

        using var bert = new TempDirectory();
        var bertLayout = new ModelLayout(Config);
        Checkpoint.Save(bert.Path, bertLayout, RandomLayers(bertLayout, 6));
        e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(bert.Path, Gpt));
        Assert.Contains("holds a bert model", e.Message);
    }

    [Fact]
    public void ConfigsDispatchOnModelType()
    {
        Assert.IsType<BertConfig>(ModelConfigs.FromJson(Config.ToJson()));
        Assert.IsType<GptConfig>(ModelConfigs.FromJson(Gpt.ToJson()));
        Assert.IsType<GptConfig>(ModelConfigs.FromJson("""{"vocab_size": 50, "n_positions": 16, "n_embd": 8, "n_layer": 2, "n_head": 2}"""));
        var e = Assert.Throws<InvalidDataException>(() => ModelConfigs.FromJson("""{"model_type": "t5"}""", "x.json"));
        Assert.Contains("\"t5\"", e.Message);
        Assert.IsType<BertConfig>(ModelConfigs.Preset("bert-tiny"));
        Assert.IsType<GptConfig>(ModelConfigs.Preset("GPT2-tiny"));
        Assert.Contains("bert-large", Assert.Throws<ArgumentException>(() => ModelConfigs.Preset("bert-huge")).Message);
        Assert.Equal(["model_type: gpt2 vs bert"], ((IModelConfig)Gpt).Differences(Config));
    }

    [Fact]
    public void InitialisationFollowsHuggingFace()
    {
        var layout = new ModelLayout(Config);
        var w = Models.Initialize(layout, 3);
        Assert.Equal(w.Select(a => a.ToArray()), Models.Initialize(layout, 3));
        var emb = layout.Embedding;
        var word = w[emb.Index].AsSpan((int)emb["word_embeddings.weight"].Offset, (int)emb["word_embeddings.weight"].Length);
        Assert.All(word.Slice(28 * 8, 8).ToArray(), x => Assert.Equal(0f, x)); // the padding row
        Assert.Contains(word.Slice(27 * 8, 8).ToArray(), x => x != 0f);
        Assert.All(w[emb.Index].AsSpan((int)emb["LayerNorm.weight"].Offset, 8).ToArray(), x => Assert.Equal(1f, x));
        var head = layout.Head;
        Assert.All(w[head.Index].AsSpan((int)head["bias"].Offset, 30).ToArray(), x => Assert.Equal(0f, x));
        var q = w[1].AsSpan((int)layout.Blocks[0]["attention.self.query.weight"].Offset, 64).ToArray();
        var std = Math.Sqrt(q.Select(x => (double)x * x).Average());
        Assert.InRange(std, 0.01, 0.03);
    }
}
